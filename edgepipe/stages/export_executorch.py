"""``export-executorch``: torch model → ExecuTorch program (``model.pte``): ``torch.export`` at
batch 1, lowered with XNNPACK taking every op it supports, for ExecuTorch's runtime on phones
and embedded Linux (and on x86, where edgepipe runs and checks it).

This is fp32; the INT8 program comes from ``quantize`` with ``backend: torch`` and
``torch: {quantizer: xnnpack}``, which shares calibration, target and recovery with the other
quantizers. ExecuTorch succeeds TorchScript's lite interpreter (``export-torchscript`` with
``mobile: true``), which PyTorch no longer develops.
"""

from __future__ import annotations

__all__ = ["ExportExecutorchSpec", "ExportExecutorchStage"]

from typing import Any, Literal

from pydantic import Field

from edgepipe.models.torch_export import (
    check_faithful,
    example_batch,
    export_program,
    lower_executorch,
)
from edgepipe.models.torch_model import input_only, rebuild
from edgepipe.runtimes.executorch import PTE_FILE, load_forward
from edgepipe.stages.base import (
    ArtifactKind,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)

_RTOL = 1e-3  # of the largest reference output: XNNPACK's fp32 kernels reassociate sums


class ExportExecutorchSpec(SingleInputSpec):
    """Export a torch model to an ExecuTorch program lowered to XNNPACK (fp32, batch 1)."""

    type: Literal["export-executorch"] = Field(description="Stage type.")


@register_stage
class ExportExecutorchStage(Stage):
    type = "export-executorch"
    spec_class = ExportExecutorchSpec
    version = 1
    tools = ("torch", "timm", "executorch")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.EXECUTORCH_PROGRAM
    summary = "ExecuTorch program (.pte) lowered to XNNPACK, for mobile and embedded CPUs."

    def run(self, spec: ExportExecutorchSpec, ctx: StageContext) -> dict[str, Any]:
        source = ctx.inputs[0]
        module = input_only(rebuild(source.path, ctx.recipe_dir), source.meta.get("task"))
        example = example_batch(source.meta, 1)
        target = ctx.out_dir / PTE_FILE
        delegation = lower_executorch(export_program(module, example), target)
        method = load_forward(target)
        worst = check_faithful(
            module, lambda batch: method.execute([batch])[0], example, _RTOL, "ExecuTorch program"
        )
        ctx.log.info(
            "%s: %d XNNPACK subgraphs, %d nodes on portable kernels; max abs difference to "
            "eager %.3g",
            target.name,
            delegation["xnnpack_subgraphs"],
            delegation["portable_nodes"],
            worst,
        )
        return program_meta(source.meta, "fp32", delegation)


def program_meta(source_meta: dict[str, Any], precision: str, delegation: dict) -> dict:
    """The artifact meta of a ``.pte`` built from the torch model described by ``source_meta``."""
    size = source_meta["data_config"]["input_size"]
    return {
        **source_meta,
        "model_file": PTE_FILE,
        "precision": precision,
        "inputs": [{"name": "input", "dtype": "float32", "shape": [1, *size]}],
        "executorch": {"backend": "xnnpack", **delegation},
    }
