"""Describe an ONNX model's inputs and outputs for the ``onnx-model`` artifact metadata."""

from __future__ import annotations

__all__ = [
    "ONNX_FILE",
    "copy_model_files",
    "describe_onnx",
    "external_data_files",
    "image_axes",
    "import_onnx",
    "remove_model_files",
]

import shutil
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError

ONNX_FILE = "model.onnx"


def copy_model_files(source_dir: Path, out_dir: Path) -> None:
    """Copy ``model.onnx`` and its external data (``model.onnx.data``) between artifacts."""
    for produced in source_dir.glob(f"{ONNX_FILE}*"):
        shutil.copyfile(produced, out_dir / produced.name)


def remove_model_files(folder: Path) -> None:
    """Remove a half-written ``model.onnx`` and its external data."""
    for produced in folder.glob(f"{ONNX_FILE}*"):
        produced.unlink()


def image_axes(dims: list) -> tuple[int, int] | tuple[()]:
    """Height and width axes of an image input: NCHW, or NHWC when the last dim is 1/3/4 and
    the second is not (a composed model's raw frames); none for other ranks."""
    if len(dims) != 4:
        return ()
    nhwc = dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4)
    return (1, 2) if nhwc else (2, 3)


def describe_onnx(path: Path) -> dict[str, Any]:
    """Opset and named, typed, shaped inputs/outputs; dynamic dims are their symbolic names."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_value_info(v) for v in model.graph.input if v.name not in initializers]
    return {
        "model_file": path.name,
        "opset": opset,
        "inputs": inputs,
        "outputs": [_value_info(v) for v in model.graph.output],
        "external_data": any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        ),
    }


def _value_info(value) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": dims}


def external_data_files(source: Path) -> list[Path]:
    """Files beside an ONNX model named after it (``model.onnx.data``, ``model.onnx_data``):
    where exporters put external weights, and so what its cache key covers."""
    if not source.parent.is_dir():
        return []
    return sorted(
        p for p in source.parent.iterdir() if p.name.startswith(source.name) and p != source
    )


def import_onnx(source: Path, out_dir: Path) -> dict[str, Any]:
    """Copy a user's ONNX file (and its external data) into ``out_dir``; its description."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    target = out_dir / "model.onnx"
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends: all mean "not an ONNX model"
        raise StageError(f"{source} is not a readable ONNX model: {exc}") from None
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        keyed = {p.name for p in external_data_files(source)}
        elsewhere = sorted({ExternalDataInfo(t).location for t in external} - keyed)
        if elsewhere:  # a change to it would not be seen: refuse rather than cache stale
            raise StageError(
                f"{source.name} keeps weights in {elsewhere[0]}, which is not named after it: "
                f"edgepipe tracks external data files named {source.name}*. Re-save with "
                f"onnx.save(model, '{source.name}', save_as_external_data=True, "
                f"location='{source.name}.data')"
            )
        model = onnx.load(str(source))
        onnx.save(model, str(target), save_as_external_data=True, location="model.onnx.data")
    else:
        shutil.copyfile(source, target)
    return describe_onnx(target)
