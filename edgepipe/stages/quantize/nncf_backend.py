"""OpenVINO back end of the ``quantize`` stage: NNCF post-training INT8 candidates of an IR.

A composed IR keeps its preprocessing (and post-processing) float: their ops are in NNCF's
ignored scope, so resize, crop and normalisation run as composed.
"""

from __future__ import annotations

__all__ = ["NncfBackend"]

import re
import shutil
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.runtimes.openvino import IR_FILE
from edgepipe.stages.base import Artifact, ArtifactKind, StageContext
from edgepipe.stages.convert_openvino import describe_ir
from edgepipe.stages.quantize.calibration import calibration_samples
from edgepipe.stages.quantize.network_split import is_composed

# An attention block: OpenVINO's frontends fuse it to ScaledDotProductAttention, or leave
# MatMul → Softmax → MatMul. A Softmax that feeds no MatMul (a classifier's post-processing
# on a conv net) is not attention.
_ATTENTION_OPS = ("ScaledDotProductAttention",)


class NncfBackend:
    """Builds INT8 candidates of one IR with NNCF; ``fp16`` is the float IR, fp16-compressed.

    Settings (JSON, recorded): ``mode`` (static or fp16), ``preset``, ``fast_bias_correction``
    and ``ignored_names`` (nodes kept float on top of the recipe's ignored scope).
    """

    kind = "openvino-ir"
    output_kind = ArtifactKind.OPENVINO_IR
    has_fp16 = True  # the fallback: the float IR, fp16-compressed

    def __init__(self, spec, source: Artifact, ctx: StageContext):
        import openvino as ov

        self.spec, self.source, self.ctx = spec, source, ctx
        self.scratch = ctx.out_dir / "_scratch"
        self.scratch.mkdir(exist_ok=True)
        self.model_path = source.path / IR_FILE
        self.model = ov.Core().read_model(str(self.model_path))
        self.model_type = _model_type(spec.openvino.model_type, self.model)
        self._samples: list[Any] | None = None

    def configured(self) -> dict[str, Any]:
        options = self.spec.openvino
        return {
            "mode": "static",
            "preset": options.preset,
            "fast_bias_correction": options.fast_bias_correction,
            "ignored_names": [],
        }

    def calibration(self) -> list[Any]:
        if self._samples is None:
            images = calibration_samples(
                self.spec.calibration, self.source.meta, self.ctx.recipe_dir, self.ctx.log
            )
            self._samples = _batched(images, self.model)
        return self._samples

    def build(self, settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        import openvino as ov

        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / IR_FILE
        if settings["mode"] == "fp16":
            ov.save_model(self.model.clone(), str(target), compress_to_fp16=True)
            quantization = {"backend": "openvino", "settings": settings}
            meta = {"precision": "fp16", "quantization": quantization}
            return {**self.source.meta, **describe_ir(target), **meta}
        subset = min(self.spec.openvino.subset_size, len(self.calibration()))
        quantized = self._quantize(settings, subset)
        # compress_to_fp16 would also halve the float weights NNCF left unquantized
        ov.save_model(quantized, str(target), compress_to_fp16=False)
        fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
        if not fake_quantize:
            self.ctx.log.warning("NNCF inserted no FakeQuantize node: the IR is not quantized")
        quantization = {
            "backend": "openvino",
            "settings": settings,
            "model_type": self.model_type,
            "subset_size": subset,
            "fake_quantize": fake_quantize,
        }
        return {
            **self.source.meta,
            **describe_ir(target),
            "precision": "int8",
            "quantization": quantization,
        }

    def _quantize(self, settings: dict[str, Any], subset: int) -> Any:
        import nncf

        options = self.spec.openvino
        patterns = [*options.ignored_patterns, *_baked_in(self.source.meta, self.model)]
        try:
            return nncf.quantize(
                self.model,
                nncf.Dataset(self.calibration()),
                preset=nncf.QuantizationPreset(settings["preset"]),
                model_type=nncf.ModelType.TRANSFORMER if self.model_type == "transformer" else None,
                subset_size=subset,
                fast_bias_correction=settings["fast_bias_correction"],
                ignored_scope=nncf.IgnoredScope(
                    names=[*options.ignored_names, *settings["ignored_names"]],
                    types=list(options.ignored_types),
                    patterns=patterns,
                ),
            )
        except nncf.ValidationError as exc:  # e.g. an ignored name or type that matches nothing
            raise StageError(
                f"NNCF refused the settings: {summarize_exception(exc)}. Check openvino."
                "ignored_names, ignored_types and ignored_patterns against the IR's node names "
                "and op types"
            ) from None
        except Exception as exc:  # NNCF surfaces OpenVINO's RuntimeError for graphs it cannot run
            raise StageError(f"NNCF quantization failed: {summarize_exception(exc)}") from None

    def sensitive_nodes(self, tried, samples: list[Any]) -> list[tuple[str, float]]:
        """(op name, dB lost) of the ops NNCF quantized, most costly first (see
        ``_ov_sensitivity``)."""
        from edgepipe.stages.quantize.ov_sensitivity import sensitive_ops

        return sensitive_ops(self.model_path, tried.folder / IR_FILE, samples)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _baked_in(meta: dict[str, Any], model: Any) -> list[str]:
    """Name patterns of a composed model's preprocessing and post-processing ops, as
    compose-preprocessing names them; only those that name ops of this IR (OpenVINO may fuse
    a Softmax away), since NNCF refuses a pattern that matches nothing."""
    if not is_composed(meta):
        return []
    names = [op.get_friendly_name() for op in model.get_ops()]
    return [
        pattern
        for pattern in ("preprocess/.*", "postprocess/.*")
        if any(re.fullmatch(pattern, name) for name in names)
    ]


def _model_type(requested: str, model: Any) -> str:
    """'transformer' or 'cnn': as requested, or detected from the graph's attention ops."""
    if requested != "auto":
        return requested
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind in _ATTENTION_OPS:
            return "transformer"
        if kind == "Softmax" and any(
            target.get_node().get_type_name() == "MatMul"
            for target in op.output(0).get_target_inputs()
        ):
            return "transformer"
    return "cnn"


def _batched(samples: list[Any], model: Any) -> list[Any]:
    """Calibration samples are [1, ...]; an IR with a static batch B gets B of them at a time."""
    import numpy as np

    first = model.inputs[0].get_partial_shape()
    if first.rank.is_dynamic or first.rank.get_length() == 0 or first[0].is_dynamic:
        return samples
    batch = first[0].get_length()
    if batch == 1:
        return samples
    if len(samples) < batch:
        raise StageError(
            f"the IR takes a fixed batch of {batch} but calibration has {len(samples)} "
            f"samples: set calibration.count to at least {batch}"
        )
    return [
        np.concatenate(samples[i : i + batch]) for i in range(0, len(samples) - batch + 1, batch)
    ]
