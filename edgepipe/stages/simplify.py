"""``simplify``: onnxsim constant folding and graph clean-up, checked on random inputs."""

from __future__ import annotations

__all__ = ["SimplifySpec", "SimplifyStage"]

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.onnx_io import (
    ONNX_FILE,
    copy_model_files,
    describe_onnx,
    image_axes,
    remove_model_files,
)
from edgepipe.spec_bounds import MAX_CHECK_INPUTS
from edgepipe.stages.base import (
    Artifact,
    ArtifactKind,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)


class SimplifySpec(SingleInputSpec):
    """Simplify an ONNX model with onnxsim."""

    type: Literal["simplify"] = Field(description="Stage type.")
    check_n: int = Field(
        default=3,
        ge=0,
        le=MAX_CHECK_INPUTS,
        description="How many random inputs onnxsim uses to "
        f"check the simplified model against the original (0 = no check; at most "
        f"{MAX_CHECK_INPUTS}).",
    )
    optimize: bool = Field(default=True, description="Run onnxsim's graph optimizers.")
    skip_fuse_bn: bool = Field(default=False, description="Keep BatchNorm separate from Conv.")
    skipped_optimizers: list[str] = Field(
        default_factory=list, description="onnxsim optimizer passes to skip."
    )
    on_failure: Literal["error", "keep-input"] = Field(
        default="error",
        description="If onnxsim fails or its check fails: stop ('error'), or pass "
        "the input through unchanged with a warning ('keep-input').",
    )


@register_stage
class SimplifyStage(Stage):
    type = "simplify"
    spec_class = SimplifySpec
    version = 1
    tools = ("onnx", "onnxsim", "onnxruntime")
    input_kinds = (ArtifactKind.ONNX_MODEL,)
    output = ArtifactKind.ONNX_MODEL
    summary = "Simplify an ONNX model with onnxsim (checked on random inputs)."

    def run(self, spec: SimplifySpec, ctx: StageContext) -> dict[str, Any]:
        source = ctx.inputs[0]
        try:
            _simplify(source, spec, ctx.out_dir / ONNX_FILE)
        except StageError as exc:
            if spec.on_failure == "error":
                raise
            ctx.log.warning("%s; keeping the input model unchanged (on_failure: keep-input)", exc)
            remove_model_files(ctx.out_dir)
            copy_model_files(source.path, ctx.out_dir)
            return {**source.meta, "simplified": False}
        meta = describe_onnx(ctx.out_dir / ONNX_FILE)
        before, after = _node_count(source.path / ONNX_FILE), _node_count(ctx.out_dir / ONNX_FILE)
        ctx.log.info("onnxsim: %d → %d nodes", before, after)
        return {
            **source.meta,
            **meta,
            "simplified": True,
            "nodes_before": before,
            "nodes_after": after,
        }


def _simplify(source: Artifact, spec: SimplifySpec, target: Path) -> None:
    import onnx
    import onnxsim

    try:
        model, check_ok = onnxsim.simplify(
            str(source.path / ONNX_FILE),
            check_n=spec.check_n,
            perform_optimization=spec.optimize,
            skip_fuse_bn=spec.skip_fuse_bn,
            skipped_optimizers=spec.skipped_optimizers or None,
            test_input_shapes=_test_shapes(source.meta),
        )
    except Exception as exc:  # onnxsim raises RuntimeError, ValueError, onnx errors...
        raise StageError(f"onnxsim failed: {summarize_exception(exc)}") from None
    if not check_ok:
        raise StageError(
            "onnxsim's check failed: the simplified model's outputs differ from the "
            "original on random inputs"
        )
    external = bool(source.meta.get("external_data"))
    onnx.save(
        model,
        str(target),
        save_as_external_data=external,
        location=f"{ONNX_FILE}.data" if external else None,
    )


def _test_shapes(meta: dict[str, Any]) -> dict[str, list[int]]:
    """Concrete shapes for dynamic inputs: height/width from the model's data config (NCHW or
    a composed model's NHWC frames), every other dynamic dim (the batch) 1."""
    height, width = ((meta.get("data_config") or {}).get("input_size") or [3, 224, 224])[-2:]
    shapes = {}
    for value in meta.get("inputs", []):
        dims = value["shape"]
        if all(isinstance(d, int) for d in dims):
            continue
        sizes = dict(zip(image_axes(dims), (height, width), strict=False))
        shapes[value["name"]] = [
            d if isinstance(d, int) else sizes.get(i, 1) for i, d in enumerate(dims)
        ]
    return shapes


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)
