"""``export``: torch model → ONNX, with the dynamo exporter and the TorchScript one as fallback."""

from __future__ import annotations

__all__ = ["ExportSpec", "ExportStage"]

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.models.onnx_io import ONNX_FILE, describe_onnx, remove_model_files
from edgepipe.models.torch_model import input_only, rebuild
from edgepipe.spec_bounds import MAX_BATCH, MAX_IMAGE_SIDE, ImageSide
from edgepipe.stages.base import ArtifactKind, SingleInputSpec, Stage, StageContext, register_stage

# protobuf caps a single ONNX file at 2 GiB; leave headroom for the graph itself.
_EXTERNAL_DATA_THRESHOLD = 1536 * 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportSpec(SingleInputSpec):
    """Export a torch model to ONNX."""

    type: Literal["export"] = Field(description="Stage type.")
    opset: int = Field(
        default=18,
        ge=9,
        le=23,
        description="ONNX opset (9-23). The dynamo "
        "exporter works natively at 18+; the TorchScript exporter supports up to 20.",
    )
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        default="auto",
        description="'auto' tries dynamo, then falls back to torchscript (and says so in the log).",
    )
    dynamic_batch: bool = Field(default=True, description="Make the batch dimension dynamic.")
    dynamic_hw: Literal[False, True, "width"] = Field(
        default=False,
        description="Make height and width dynamic, or only the width ('width': text lines). "
        "Unset, it follows the model: dynamic for detectors and for crop_mode none, the width "
        "for crop_mode height.",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=MAX_BATCH,
        description=f"Batch size when dynamic_batch is false (at most {MAX_BATCH}).",
    )
    input_size: tuple[int, ImageSide, ImageSide] | None = Field(
        default=None,
        description="[C, H, W] of the traced input (H and W 1.."
        f"{MAX_IMAGE_SIDE}); default: the model's data config.",
    )
    input_name: str = Field(default="input", min_length=1, description="Name of the ONNX input.")
    output_names: list[str] = Field(
        default_factory=lambda: ["output"], min_length=1, description="Names of the ONNX outputs."
    )
    constant_folding: bool = Field(default=True, description="Fold constants while exporting.")
    external_data: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Store weights in model.onnx.data: 'auto' does it when the "
        "weights approach protobuf's 2 GiB limit.",
    )


@register_stage
class ExportStage(Stage):
    type = "export"
    spec_class = ExportSpec
    # 2: stack traces (absolute source paths) stripped from node metadata; 3: carries `weights`
    version = 3
    tools = ("torch", "timm", "onnx", "onnxscript")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.ONNX_MODEL
    summary = "Export a torch model to ONNX (dynamo exporter, TorchScript fallback)."

    def run(self, spec: ExportSpec, ctx: StageContext) -> dict[str, Any]:
        import torch

        source = ctx.inputs[0]
        module = rebuild(source.path, ctx.recipe_dir)
        data_config = source.meta["data_config"]
        task = source.meta.get("task", "classification")
        spec = _task_defaults(spec, task, data_config, ctx)
        size = list(spec.input_size or data_config["input_size"])
        # dynamo specialises dims of size 1, so trace a dynamic batch with 2 samples
        batch = 2 if spec.dynamic_batch else spec.batch_size
        example = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
        external = _use_external_data(spec, module)
        target = ctx.out_dir / ONNX_FILE
        module = input_only(module, task)
        used = _export_with_fallback(module, example, spec, target, external, ctx, task)
        _strip_stack_traces(target)
        meta = describe_onnx(target)
        _check(target, spec, meta["inputs"])
        ctx.log.info("exported with the %s exporter at opset %s", used, meta["opset"])
        return {
            **meta,
            "exporter": used,
            "data_config": {**data_config, "input_size": size},
            # where the weights came from: verification and quantization targets pick their
            # defaults by it (trained weights gate classes)
            "weights": source.meta.get("weights"),
            # what the model does and how its outputs decode: only non-classifiers carry them
            **{k: source.meta[k] for k in ("task", "ctc") if k in source.meta},
        }


def _task_defaults(spec: ExportSpec, task: str, data_config: dict, ctx: StageContext):
    """Shapes the model's task needs, where the recipe leaves them unset: a torchvision detector
    takes one image of any size and gives a variable number of detections; a text line has a
    fixed height and any width."""
    unset = {name for name in ("dynamic_batch", "dynamic_hw", "output_names")} - (
        spec.model_fields_set
    )
    update: dict[str, Any] = {}
    crop_mode = data_config.get("crop_mode")
    if task == "detection":
        update = {"dynamic_batch": False, "dynamic_hw": True, "output_names": _DETECTIONS}
    elif crop_mode == "none":
        update = {"dynamic_hw": True}
    elif crop_mode == "height":
        update = {"dynamic_hw": "width"}
    update = {k: v for k, v in update.items() if k in unset}
    if update:
        ctx.log.info(
            "%s model: %s", task, ", ".join(f"{k}: {v}" for k, v in sorted(update.items()))
        )
    return spec.model_copy(update=update)


_DETECTIONS = ["boxes", "scores", "labels"]


def _use_external_data(spec: ExportSpec, module) -> bool:
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    if spec.external_data == "never" and size > _EXTERNAL_DATA_THRESHOLD:
        raise StageError(
            f"the weights take {size / 2**30:.1f} GiB, too large for one ONNX file; "
            "set external_data: auto"
        )
    return spec.external_data == "always" or (
        spec.external_data == "auto" and size > _EXTERNAL_DATA_THRESHOLD
    )


def _export_with_fallback(
    module, example, spec: ExportSpec, target: Path, external: bool, ctx: StageContext, task: str
) -> str:
    order = ["dynamo", "torchscript"] if spec.exporter == "auto" else [spec.exporter]
    if task == "detection" and spec.exporter == "auto":
        # torch.export cannot trace the data-dependent box filtering and NMS of torchvision's
        # detectors (torch 2.14); the TorchScript exporter emits ONNX NonMaxSuppression
        order.reverse()
    failures: dict[str, str] = {}
    for exporter in order:
        try:
            _EXPORTERS[exporter](module, example, spec, target, external, task)
            for failed, message in failures.items():
                ctx.log.warning(
                    "the %s exporter failed (%s); exported with %s instead",
                    failed,
                    message,
                    exporter,
                )
            return exporter
        except Exception as exc:  # exporters raise anything from TorchExportError to KeyError
            failures[exporter] = _condense(exc)
            remove_model_files(target.parent)
    details = "; ".join(f"{name} exporter: {msg}" for name, msg in failures.items())
    raise StageError(
        f"the model could not be exported to ONNX opset {spec.opset}. {details}. "
        f"{_hint(details, spec)}"
    )


def _export_dynamo(
    module, example, spec: ExportSpec, target: Path, external: bool, task: str
) -> None:
    import torch

    dims: dict[int, Any] = {}
    if spec.dynamic_batch:
        dims[0] = torch.export.Dim("batch")
    if spec.dynamic_hw:
        dims[3] = torch.export.Dim.AUTO
    if spec.dynamic_hw is True:
        dims[2] = torch.export.Dim.AUTO
    torch.onnx.export(
        module,
        (example,),
        str(target),
        dynamo=True,
        opset_version=spec.opset,
        input_names=[spec.input_name],
        output_names=spec.output_names,
        dynamic_shapes={"x": dims} if dims else None,
        external_data=external,
        do_constant_folding=spec.constant_folding,
        verbose=False,
    )


def _export_torchscript(
    module, example, spec: ExportSpec, target: Path, external: bool, task: str
) -> None:
    import torch

    input_axes = {0: "batch"} if spec.dynamic_batch else {}
    if spec.dynamic_hw:
        input_axes[3] = "width"
    if spec.dynamic_hw is True:
        input_axes[2] = "height"
    dynamic_axes = {spec.input_name: input_axes} if input_axes else {}
    if spec.dynamic_batch:
        dynamic_axes.update({name: {0: "batch"} for name in spec.output_names})
    if task == "detection":  # one image in, any number of detections out
        dynamic_axes.update({name: {0: "detections"} for name in spec.output_names})
    torch.onnx.export(
        module,
        (example,),
        str(target),
        dynamo=False,
        opset_version=spec.opset,
        input_names=[spec.input_name],
        output_names=spec.output_names,
        dynamic_axes=dynamic_axes or None,
        do_constant_folding=spec.constant_folding,
    )
    if external:
        import onnx

        model = onnx.load(str(target))
        onnx.save(model, str(target), save_as_external_data=True, location=f"{ONNX_FILE}.data")


_EXPORTERS = {"dynamo": _export_dynamo, "torchscript": _export_torchscript}


def _strip_stack_traces(target: Path) -> None:
    """The dynamo exporter records each node's Python stack trace, with absolute paths of the
    installed sources: the same model exported from another checkout would differ in bytes.
    Drop them (the node namespaces, which name the modules, stay for debugging)."""
    import onnx

    model = onnx.load(str(target), load_external_data=False)
    changed = False
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            changed = True
    if changed:  # external-data references are kept as they are; only the graph is rewritten
        onnx.save(model, str(target))


def _check(target: Path, spec: ExportSpec, inputs: list[dict[str, Any]]) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(target))
    except onnx.checker.ValidationError as exc:
        raise StageError(f"the exported model is not valid ONNX: {_condense(exc)}") from None
    if spec.dynamic_batch and inputs and isinstance(inputs[0]["shape"][0], int):
        raise StageError(
            "dynamic_batch is set but the exported model has a fixed batch of "
            f"{inputs[0]['shape'][0]}: the model's code fixes it. "
            "Set dynamic_batch: false, or fix the reshape in the model"
        )


def _condense(exc: BaseException, limit: int = 400) -> str:
    """The one line of an exporter error that names the problem (the op, the module)."""
    text = _ANSI.sub("", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in lines:  # dynamo: the root cause follows the summary header
        summary = lines[lines.index("## Exception summary") + 1 :]
        root = next((ln for ln in summary if ln.startswith("<class")), None)
        if root:
            return re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>", r"\1", root)[:limit]
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}"[:limit]


def _hint(details: str, spec: ExportSpec) -> str:
    lowered = details.lower()
    if any(w in lowered for w in ("unsupported", "not supported", "no onnx function")):
        return (
            f"An operator has no ONNX translation at opset {spec.opset}: try a higher opset or the "
            "other exporter (exporter: dynamo|torchscript), or replace that operation in the model"
        )
    if "onnxscript" in lowered and "no module" in lowered:
        return "The dynamo exporter needs onnxscript: pip install onnxscript"
    return "Try the other exporter (exporter: dynamo|torchscript), or dynamic_hw: false"
