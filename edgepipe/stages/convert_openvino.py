"""``convert-openvino``: ONNX or torch model → OpenVINO IR (``model.xml`` + ``model.bin``).

runtimes/openvino.py runs the IR: in true fp32 for verification (OpenVINO picks bf16 on AMX CPUs
by default, MEASUREMENTS #4), with the benchmark's settings for timing.
"""

from __future__ import annotations

__all__ = [
    "ConvertOpenVinoSpec",
    "ConvertOpenVinoStage",
    "describe_ir",
]

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.onnx_io import ONNX_FILE as ONNX_FILE
from edgepipe.models.torch_model import rebuild, task_outputs
from edgepipe.runtimes.openvino import IR_FILE
from edgepipe.spec_bounds import MAX_DIM
from edgepipe.stages.base import (
    Artifact,
    ArtifactKind,
    FieldError,
    SingleInputSpec,
    Stage,
    StageContext,
    missing_modules,
    register_stage,
)

_RANGE = re.compile(r"([0-9]{1,20})\.\.([0-9]{1,20})")
# facts about the input's ONNX file that would be wrong about the IR
_ONNX_FILE_FACTS = ("opset", "external_data", "nodes_before", "nodes_after")


class ConvertOpenVinoSpec(SingleInputSpec):
    """Convert an ONNX or torch model to OpenVINO IR."""

    type: Literal["convert-openvino"] = Field(description="Stage type.")
    compress_to_fp16: bool = Field(
        default=False,
        description=(
            "Store float weights as fp16 (half the size; parity then uses fp16 thresholds). "
            "OpenVINO's own save_model defaults to true; edgepipe defaults to false so that an "
            "fp32 model gives an fp32 IR."
        ),
    )
    input_shape: list[int | str] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description=(
            "Reshape the model's input, e.g. [1, 3, 224, 224] to make it static. Each dim is a "
            f"size (1..{MAX_DIM}), -1 or '?' (dynamic), or 'lo..hi' (bounded, 1 <= lo <= hi <= "
            f"{MAX_DIM}). At most 8 dims. Default: keep the input's shape "
            "(an ONNX model's dynamic dims stay dynamic; a torch model gets a dynamic batch)."
        ),
    )

    @model_validator(mode="after")
    def _valid_dims(self) -> ConvertOpenVinoSpec:
        for index, dim in enumerate(self.input_shape or []):
            if problem := _dim_problem(dim):
                raise FieldError(f"input_shape.{index}", problem)
        return self


@register_stage
class ConvertOpenVinoStage(Stage):
    """ONNX or torch model → OpenVINO IR; the IR is read back before the stage succeeds."""

    type = "convert-openvino"
    spec_class = ConvertOpenVinoSpec
    version = 1
    # torch and timm convert a torch-model input. tools_for() sees only the spec, not the input's
    # kind, so they are always in the key: a stale IR after a timm upgrade would be worse than
    # one extra (byte-identical) ONNX conversion.
    tools = ("openvino", "torch", "timm")
    input_kinds = (ArtifactKind.ONNX_MODEL, ArtifactKind.TORCH_MODEL)
    output = ArtifactKind.OPENVINO_IR
    summary = "Convert an ONNX or torch model to OpenVINO IR (model.xml + model.bin)."

    def preflight(self, spec: ConvertOpenVinoSpec, recipe_dir: Path) -> list[str]:
        # only openvino: a torch-model input comes from a stage whose preflight requires torch
        if missing_modules(("openvino",)):
            return ["needs the Python package openvino: pip install openvino"]
        return []

    def run(self, spec: ConvertOpenVinoSpec, ctx: StageContext) -> dict[str, Any]:
        import openvino as ov

        source = ctx.inputs[0]
        model = _convert(source, ctx)
        if spec.input_shape is not None:
            _reshape(model, spec.input_shape)
        target = ctx.out_dir / IR_FILE
        ov.save_model(model, str(target), compress_to_fp16=spec.compress_to_fp16)
        meta = _meta(source, describe_ir(target), spec)  # reading it back checks the IR loads
        ctx.log.info(
            "OpenVINO IR: %d ops, inputs %s, precision %s",
            meta["ops"],
            ", ".join(f"{i['name']}{i['shape']}" for i in meta["inputs"]),
            meta["precision"],
        )
        return meta


def _convert(source: Artifact, ctx: StageContext) -> Any:
    """``openvino.Model`` from the input artifact; library failures become a StageError."""
    import openvino as ov

    try:
        if source.kind == ArtifactKind.TORCH_MODEL:
            return _from_torch(source, ctx)
        return ov.convert_model(str(source.path / ONNX_FILE))
    except StageError:
        raise
    except Exception as exc:  # OpenVINO raises RuntimeError/OpConversionFailure with C++ text
        raise StageError(
            f"OpenVINO could not convert the {source.kind.value} from '{source.stage_id}': "
            f"{summarize_exception(exc)}"
        ) from None


def _from_torch(source: Artifact, ctx: StageContext) -> Any:
    """Trace the rebuilt module; batch dynamic, C/H/W from its data config (like ``export``)."""
    import openvino as ov
    import torch

    module = task_outputs(rebuild(source.path, ctx.recipe_dir), source.meta.get("task"))
    size = list(source.meta["data_config"]["input_size"])
    example = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model = ov.convert_model(
            module, example_input=example, input=[ov.PartialShape([-1, *size])]
        )
    # the torch frontend names the input after forward()'s argument and leaves outputs unnamed;
    # use export's names so an IR from torch looks like one from ONNX
    model.inputs[0].get_tensor().set_names({"input"})
    for index, port in enumerate(model.outputs):
        if not port.get_names():
            port.get_tensor().set_names({"output" if index == 0 else f"output{index}"})
    return model


def _reshape(model: Any, dims: list[int | str]) -> None:
    import openvino as ov

    if len(model.inputs) != 1:
        raise StageError(
            f"input_shape applies to a model with one input; this one has {len(model.inputs)}"
        )
    rank = model.inputs[0].get_partial_shape().rank
    if rank.is_static and rank.get_length() != len(dims):
        raise StageError(
            f"input_shape {dims} has {len(dims)} dims but the model's input has "
            f"{rank.get_length()}: {model.inputs[0].get_partial_shape()}"
        )
    shape = ov.PartialShape("[" + ",".join("?" if d == -1 else str(d) for d in dims) + "]")
    try:
        model.reshape(shape)
    except Exception as exc:  # a graph with sizes baked in (e.g. position embeddings)
        raise StageError(
            f"the model cannot take input_shape {dims}: {summarize_exception(exc)}. "
            "Keep the exported size, or export with dynamic_hw: true"
        ) from None


def _dim_problem(dim: int | str) -> str | None:
    """Why ``dim`` cannot be one dimension of input_shape, or None."""
    usage = f"use a size 1..{MAX_DIM}, -1 or '?' for dynamic, or 'lo..hi' for a bounded range"
    if isinstance(dim, int):
        return None if dim == -1 or 1 <= dim <= MAX_DIM else f"{dim} is not a dimension: {usage}"
    if dim == "?":
        return None
    match = _RANGE.fullmatch(dim)
    if not match:
        return f"{dim[:40]!r} is not a dimension: {usage}"
    low, high = int(match.group(1)), int(match.group(2))
    if not 1 <= low <= high <= MAX_DIM:
        return f"the range {dim} is empty or out of bounds: it needs 1 <= lo <= hi <= {MAX_DIM}"
    return None


def _meta(source: Artifact, described: dict[str, Any], spec: ConvertOpenVinoSpec) -> dict:
    """The input's meta (data config, baked-in pre/post-processing…) plus the IR's facts."""
    meta = {
        **{k: v for k, v in source.meta.items() if k not in _ONNX_FILE_FACTS},
        **described,
        "precision": _precision(source.meta, spec),
        "openvino": {"from": source.kind.value, "compress_to_fp16": spec.compress_to_fp16},
    }
    if "data_config" in source.meta:
        meta["data_config"] = _data_config(source.meta, described["inputs"])
    return meta


def _precision(meta: dict[str, Any], spec: ConvertOpenVinoSpec) -> str:
    """fp16 weights deserve fp16 parity thresholds; an already quantized model stays int8."""
    carried = meta.get("precision", "fp32")
    return "fp16" if spec.compress_to_fp16 and carried == "fp32" else carried


def _data_config(meta: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The input meta's data config, with input_size following a static NCHW reshape so
    calibration feeds the size the IR takes (composed models take raw pixels: untouched)."""
    config = meta["data_config"]
    if meta.get("preprocessing") or len(inputs) != 1:
        return config
    dims = inputs[0]["shape"]
    if len(dims) == 4 and all(isinstance(d, int) for d in dims[1:]):
        return {**config, "input_size": list(dims[1:])}
    return config


def describe_ir(path: Path) -> dict[str, Any]:
    """``model_file``, ``inputs``/``outputs`` (name, dtype, shape with dynamic dims as '?',
    bounded ones as 'lo..hi') and ``ops`` of the IR at ``path``; reading it checks it loads."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return {
        "model_file": path.name,
        "inputs": [_port(p, f"input{i}") for i, p in enumerate(model.inputs)],
        "outputs": [_port(p, f"output{i}") for i, p in enumerate(model.outputs)],
        "ops": len(model.get_ops()),
    }


def _port(port: Any, fallback: str) -> dict[str, Any]:
    import openvino as ov

    element = port.get_element_type()
    # to_dtype() maps bf16 to float16, which would misdescribe the model
    dtype = "bfloat16" if element == ov.Type.bf16 else element.to_dtype().name
    shape = [_dim(d) for d in port.get_partial_shape()]
    name = port.get_any_name() if port.get_names() else fallback
    return {"name": name, "dtype": dtype, "shape": shape}


def _dim(dim: Any) -> int | str:
    return dim.get_length() if dim.is_static else ("?" if dim.get_max_length() < 0 else str(dim))
