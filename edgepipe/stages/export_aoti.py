"""``export-aoti``: torch model → AOTInductor package (``model.pt2``): ``torch.export`` with a
dynamic batch, compiled ahead of time by Inductor into a shared library plus weights, which
runtimes/aoti.py loads without the model's Python code.

The C++ it compiles targets this machine's CPU (its vector ISA), so the action key holds the
CPU, as a TensorRT engine's holds the GPU. The package is loaded back and checked against eager
on an unseen batch size before the stage succeeds.
"""

from __future__ import annotations

__all__ = ["ExportAotiSpec", "ExportAotiStage", "package_meta"]

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.env import cpu_target, cxx_compiler_problems
from edgepipe.models.torch_export import (
    check_faithful,
    compile_aoti,
    example_batch,
    export_program,
)
from edgepipe.models.torch_model import input_only, rebuild
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
    version = 2  # 2: no compile time in the meta, build commands cut (reproducible bytes)
    tools = ("torch", "timm")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.AOTI_PACKAGE
    summary = "Compile a torch model ahead of time: torch.export + AOTInductor (.pt2)."

    def preflight(self, spec: ExportAotiSpec, recipe_dir: Path) -> list[str]:
        return super().preflight(spec, recipe_dir) + cxx_compiler_problems("AOTInductor")

    def key_extra(self, spec: ExportAotiSpec) -> dict[str, Any]:
        return cpu_target()

    def run(self, spec: ExportAotiSpec, ctx: StageContext) -> dict[str, Any]:
        import torch

        source = ctx.inputs[0]
        module = input_only(rebuild(source.path, ctx.recipe_dir), source.meta.get("task"))
        size = source.meta["data_config"]["input_size"]
        example = example_batch(source.meta, 2 if spec.dynamic_batch else 1)
        target = ctx.out_dir / AOTI_FILE
        started = time.perf_counter()
        max_batch = spec.max_batch if spec.dynamic_batch else None
        compile_aoti(export_program(module, example, max_batch), target)
        seconds = time.perf_counter() - started
        # a dynamic package is checked on a batch size the export did not see
        checked = torch.randn(3, *size) if spec.dynamic_batch else example
        runner = torch._inductor.aoti_load_package(str(target))
        worst = check_faithful(module, runner, checked, _RTOL, "compiled package")
        ctx.log.info(
            "%s compiled in %.1f s; max abs difference to eager %.3g", target.name, seconds, worst
        )
        # the compile time is in the log and the action record, not in the (digested) meta
        return package_meta(source.meta, "fp32", max_batch)


def package_meta(source_meta: dict[str, Any], precision: str, max_batch: int | None) -> dict:
    """The artifact meta of a ``.pt2`` built from the torch model described by ``source_meta``;
    ``max_batch`` None: batch 1 only."""
    size = source_meta["data_config"]["input_size"]
    return {
        **source_meta,
        "model_file": AOTI_FILE,
        "precision": precision,
        "inputs": [
            {"name": "input", "dtype": "float32", "shape": ["batch" if max_batch else 1, *size]}
        ],
        "aoti": {"dynamic_batch": max_batch is not None, "max_batch": max_batch or 1},
    }
