"""PyTorch back end of the ``quantize`` stage: PT2E INT8 (torchao's ``prepare_pt2e`` /
``convert_pt2e``) of the torch model itself, no ONNX in between.

- ``quantizer: x86-inductor`` (``X86InductorQuantizer``): uint8 activations, int8 per-channel
  weights, compiled by AOTInductor with freezing into int8 kernels → an AOTI package (``.pt2``)
  with a dynamic batch. ``mode: dynamic`` quantizes Linear layers only, activations at run time
  (for ViT/EVA-like models).
- ``quantizer: xnnpack`` (``XNNPACKQuantizer``): symmetric int8 → an ExecuTorch program
  (``.pte``) with the XNNPACK delegate, batch 1, the mobile artifact.

Settings (JSON, recorded): ``mode``, ``observer`` (histogram or minmax activation ranges),
``per_channel`` and ``float_modules`` (module names kept float). Calibration uses the same
real-image samples as the other back ends; sensitivity is measured with torchao's numeric
debugger (``torch_sensitivity``).
"""

from __future__ import annotations

__all__ = ["TorchBackend"]

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.torch_export import (
    compile_aoti,
    example_batch,
    export_program,
    lower_executorch,
)
from edgepipe.models.torch_model import WRAPPED, input_only, rebuild
from edgepipe.runtimes.aoti import AOTI_FILE
from edgepipe.stages.base import Artifact, ArtifactKind, StageContext
from edgepipe.stages.export_aoti import package_meta
from edgepipe.stages.export_executorch import program_meta
from edgepipe.stages.quantize.calibration import calibration_samples

_EPS = 2**-12  # the observers' eps in both quantizers' default configs


class TorchBackend:
    """Builds PT2E INT8 candidates of one torch model: ``build(settings, out_dir)`` writes an
    AOTI package (x86-inductor) or an ExecuTorch program (xnnpack)."""

    kind = "torch-model"
    has_fp16 = False  # PT2E builds INT8 only: recovery has no fp16 rung here

    def __init__(self, spec, source: Artifact, ctx: StageContext):
        self.spec, self.source, self.ctx = spec, source, ctx
        self.options = spec.torch
        self.scratch = ctx.out_dir / "_scratch"
        self.scratch.mkdir(exist_ok=True)
        self.module = input_only(rebuild(source.path, ctx.recipe_dir), source.meta.get("task"))
        self.for_executorch = self.options.quantizer == "xnnpack"
        self.output_kind = (
            ArtifactKind.EXECUTORCH_PROGRAM if self.for_executorch else ArtifactKind.AOTI_PACKAGE
        )
        # a .pte takes batch 1; an AOTI package any batch up to max_batch (the example must
        # have a batch above 1 or torch.export specialises it)
        self.max_batch = None if self.for_executorch else self.options.max_batch
        self.example = example_batch(source.meta, 1 if self.for_executorch else 2)
        self._samples: list[Any] | None = None
        self._float_program: Any = None

    def configured(self) -> dict[str, Any]:
        options = self.options
        return {
            "mode": self.spec.mode,
            "observer": options.observer,
            "per_channel": options.per_channel,
            "float_modules": list(options.float_modules),
        }

    def calibration(self) -> list[Any]:
        if self._samples is None:
            self._samples = calibration_samples(
                self.spec.calibration, self.source.meta, self.ctx.recipe_dir, self.ctx.log
            )
        return self._samples

    def quantized_module(self, settings: dict[str, Any], program: Any = None) -> Any:
        """The converted (fake-quantized) graph module of ``settings``, before compilation;
        ``program``: an exported program of the float model to start from."""
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        if settings["mode"] not in ("static", "dynamic"):
            raise StageError(f"backend torch builds INT8 only, not mode {settings['mode']!r}")
        if program is None:  # exported once: every candidate starts from the same program
            if self._float_program is None:
                self._float_program = export_program(self.module, self.example, self.max_batch)
            program = self._float_program
        try:
            prepared = prepare_pt2e(program.module(), self._quantizer(settings))
            with torch.no_grad():
                if settings["mode"] == "static":
                    for sample in self.calibration():
                        prepared(torch.from_numpy(sample))
                else:  # PT2E observes weights in a forward pass too: one, on any input
                    prepared(self.example)
            return convert_pt2e(prepared)
        except Exception as exc:  # an op pattern the quantizer cannot annotate, a bad name
            raise StageError(f"PT2E quantization failed: {summarize_exception(exc)}") from None

    def build(self, settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Write the candidate into ``out_dir``; return its artifact meta."""
        out_dir.mkdir(parents=True, exist_ok=True)
        converted = self.quantized_module(settings)
        program = export_program(converted, self.example, self.max_batch)
        quantization = {
            "backend": "torch",
            "quantizer": self.options.quantizer,
            "settings": settings,
        }
        if self.for_executorch:
            delegation = lower_executorch(program, out_dir / "model.pte")
            meta = program_meta(self.source.meta, "int8", delegation)
        else:
            compile_aoti(program, out_dir / AOTI_FILE, freezing=True)
            meta = package_meta(self.source.meta, "int8", self.max_batch)
        return {**meta, "quantization": quantization}

    def sensitive_nodes(self, tried, samples: list[Any]) -> list[tuple[str, float]]:
        """(module name, dB lost) of the quantized modules, most costly first."""
        from edgepipe.stages.quantize.torch_sensitivity import sensitive_modules

        return sensitive_modules(self, tried.settings, samples)

    def _quantizer(self, settings: dict[str, Any]) -> Any:
        if self.for_executorch:
            from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as chosen

            quantizer = chosen.XNNPACKQuantizer()
            config = chosen.get_symmetric_quantization_config(
                is_per_channel=settings["per_channel"], is_dynamic=settings["mode"] == "dynamic"
            )
            keep_float = _xnnpack_keep_float(quantizer)
        else:
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as chosen

            quantizer = chosen.X86InductorQuantizer()
            config = chosen.get_default_x86_inductor_quantization_config(
                is_dynamic=settings["mode"] == "dynamic"
            )
            if not settings["per_channel"]:
                config = dataclasses.replace(config, weight=_per_tensor(config.weight))

            def keep_float(names: list[str]) -> None:
                for name in names:
                    quantizer.set_module_name_qconfig(name, None)

        if settings["mode"] == "static" and settings["observer"] == "minmax":
            config = _minmax_activations(config)
        if settings["mode"] == "dynamic" and not self.for_executorch:
            # x86 dynamic INT8 is for Linear layers: dynamic conv is not an x86 fast path
            import torch

            quantizer.set_module_type_qconfig(torch.nn.Linear, config)
        else:
            quantizer.set_global(config)
        keep_float([f"{WRAPPED}.{name}" for name in settings["float_modules"]])
        return quantizer

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _xnnpack_keep_float(quantizer: Any) -> Any:
    """XNNPACKQuantizer refuses ``set_module_name(name, None)``: its filter function, which
    every pattern it annotates consults, leaves those modules' nodes alone instead."""
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    def keep_float(names: list[str]) -> None:
        if names:
            filters = [get_module_name_filter(name) for name in names]
            quantizer.set_filter_function(lambda node: not any(f(node) for f in filters))

    return keep_float


def _minmax_activations(config: Any) -> Any:
    from torchao.quantization.pt2e import MinMaxObserver

    def minmax(spec: Any) -> Any:
        if spec is None:
            return None
        return dataclasses.replace(
            spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=_EPS)
        )

    return dataclasses.replace(
        config,
        input_activation=minmax(config.input_activation),
        output_activation=minmax(config.output_activation),
    )


def _per_tensor(weight: Any) -> Any:
    import torch
    from torchao.quantization.pt2e import MinMaxObserver

    return dataclasses.replace(
        weight,
        qscheme=torch.per_tensor_symmetric,
        ch_axis=None,
        observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=_EPS),
    )
