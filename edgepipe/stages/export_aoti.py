"""``export-aoti``: torch model → AOTInductor package (``model.pt2``): ``torch.export`` with a
dynamic batch, compiled ahead of time by Inductor into a shared library plus weights, which
runtimes/aoti.py loads without the model's Python code.

The C++ it compiles targets this machine's CPU (its vector ISA), so the action key holds the
CPU, as a TensorRT engine's holds the GPU. The package is loaded back and checked against eager
on an unseen batch size before the stage succeeds.
"""

from __future__ import annotations

__all__ = ["ExportAotiSpec", "ExportAotiStage"]

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.env import cpu_model, cxx_compiler_problems
from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.torch_model import input_only, output_tensors, rebuild
from edgepipe.runtimes.aoti import AOTI_FILE
from edgepipe.stages.base import (
    ArtifactKind,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)

_RTOL = 1e-4  # of the largest reference output: Inductor's fused fp32 kernels stay ~1e-6


class ExportAotiSpec(SingleInputSpec):
    """Compile a torch model ahead of time with torch.export + AOTInductor (a .pt2 package)."""

    type: Literal["export-aoti"] = Field(description="Stage type.")
    dynamic_batch: bool = Field(
        default=True, description="Any batch from 1 to max_batch; false: batch 1 only."
    )
    max_batch: int = Field(
        default=64, ge=2, le=4096, description="Largest batch a dynamic package takes."
    )


@register_stage
class ExportAotiStage(Stage):
    type = "export-aoti"
    spec_class = ExportAotiSpec
    version = 1
    tools = ("torch", "timm")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.AOTI_PACKAGE
    summary = "Compile a torch model ahead of time: torch.export + AOTInductor (.pt2)."

    def preflight(self, spec: ExportAotiSpec, recipe_dir: Path) -> list[str]:
        return super().preflight(spec, recipe_dir) + cxx_compiler_problems("AOTInductor")

    def key_extra(self, spec: ExportAotiSpec) -> dict[str, Any]:
        import platform

        return {"cpu": cpu_model(), "machine": platform.machine()}

    def run(self, spec: ExportAotiSpec, ctx: StageContext) -> dict[str, Any]:
        import torch

        source = ctx.inputs[0]
        module = input_only(rebuild(source.path, ctx.recipe_dir))
        size = source.meta["data_config"]["input_size"]
        batch = 2 if spec.dynamic_batch else 1
        example = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
        target = ctx.out_dir / AOTI_FILE
        started = time.perf_counter()
        with torch.no_grad():
            _compile(_export(module, example, spec), target)
        seconds = time.perf_counter() - started
        # a dynamic package is checked on a batch size the export did not see
        checked = torch.randn(3, *size) if spec.dynamic_batch else example
        worst = _check(module, target, checked)
        ctx.log.info(
            "%s compiled in %.1f s; max abs difference to eager %.3g", target.name, seconds, worst
        )
        return {
            **source.meta,
            "model_file": AOTI_FILE,
            "precision": "fp32",
            "inputs": [
                {
                    "name": "input",
                    "dtype": "float32",
                    "shape": ["batch" if spec.dynamic_batch else 1, *size],
                }
            ],
            "aoti": {
                "dynamic_batch": spec.dynamic_batch,
                "max_batch": spec.max_batch if spec.dynamic_batch else 1,
                "compile_seconds": round(seconds, 1),
            },
        }


def _export(module: Any, example: Any, spec: ExportAotiSpec) -> Any:
    import torch

    shapes = None
    if spec.dynamic_batch:
        shapes = ({0: torch.export.Dim("batch", min=1, max=spec.max_batch)},)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises UserError, GuardOnDataDependent…
        raise StageError(
            f"torch.export failed: {summarize_exception(exc)}. A model with Python control flow "
            "that depends on its input cannot be exported; try export-torchscript or export"
        ) from None


def _compile(program: Any, target: Path) -> None:
    import torch

    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(target))
    except Exception as exc:  # a C++ compiler missing or failing, an unsupported op
        raise StageError(
            f"AOTInductor could not compile the model: {summarize_exception(exc)} "
            "(it needs a C++ compiler, e.g. g++, on PATH)"
        ) from None


def _check(module: Any, target: Path, batch: Any) -> float:
    """Largest difference between the loaded package and eager on ``batch``."""
    import torch

    runner = torch._inductor.aoti_load_package(str(target))
    with torch.no_grad():
        expected = output_tensors(module(batch))
        actual = output_tensors(runner(batch))
    worst = max(float((a - e).abs().max()) for a, e in zip(actual, expected, strict=True))
    scale = max(float(e.abs().max()) for e in expected) or 1.0
    if worst > _RTOL * scale:
        raise StageError(
            f"the compiled package differs from eager by {worst:.3g} (largest output "
            f"{scale:.3g}): not a faithful compilation"
        )
    return worst
