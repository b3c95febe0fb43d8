"""Joining a preprocessing graph onto a model, and the optional post-processing after it
(softmax, top-k): what ``compose-preprocessing`` does with the graph ``preprocess_graph``
builds, and what quantizing a composed model does again with its processed network; and the
checks that the model's image input can take what the preprocessing makes."""

from __future__ import annotations

__all__ = ["append_postprocess", "fit_model_input", "join", "model_image_input", "tensor_dims"]

from typing import Any

from edgepipe.errors import StageError
from edgepipe.imaging.preprocess_graph import OUTPUT

_INT64 = 7  # onnx.TensorProto.INT64; onnx is imported lazily


def join(prep: Any, model: Any, model_input: str, postprocess: str, top_k: int) -> None:
    """Feed ``prep``'s output into ``model``'s input (in place) and append the post-processing;
    the model's output names stay, so do its tensors' external-data references."""
    import onnx

    try:
        graph = onnx.compose.merge_graphs(
            prep.graph, model.graph, io_map=[(OUTPUT, model_input)], name=model.graph.name
        )
    except ValueError as exc:  # a name both graphs use, e.g. a model input called 'image'
        raise StageError(
            f"cannot join the preprocessing to the model: {str(exc).splitlines()[0]}; "
            "set input_name to a name the model does not use"
        ) from None
    append_postprocess(graph, postprocess, top_k)
    # merge_graphs copied the model's tensors: drop the originals before taking the copy
    model.graph.Clear()
    model.graph.CopyFrom(graph)


def model_image_input(model: Any) -> tuple[Any, int]:
    """The model's one image input, and its opset; refuses what the graph cannot feed."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < 11:
        raise StageError(
            f"the model's opset is {opset}; compose-preprocessing needs 11 or newer "
            "(13+ for antialiased resizing): export with opset: 18"
        )
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(tensor_dims(inputs[0])) != 4:
        found = ", ".join(f"{v.name} {tensor_dims(v)}" for v in inputs) or "none"
        raise StageError(f"compose-preprocessing needs one [N, C, H, W] image input; found {found}")
    return inputs[0], opset


def fit_model_input(
    value: Any, channels: int, out: tuple, dynamic_batch: bool, log: Any
) -> tuple[int | str, str]:
    """The image's batch dimension and the dtype the model wants; refuses a channel or size
    mismatch. ``out``: the preprocessed (height, width), None where it follows the image's."""
    from onnx import helper

    dims = tensor_dims(value)
    if isinstance(dims[1], int) and dims[1] != channels:
        made = "RGB (3)" if channels == 3 else "grayscale (1), as input_size says"
        raise StageError(f"the model takes {dims[1]} channels; preprocessing makes {made}")
    if any(isinstance(d, int) and d != c for d, c in zip(dims[2:], out, strict=True)):
        hint = (
            f"set input_size: [{channels}, {dims[2]}, {dims[3]}]"
            if None not in out  # a size that follows the image's
            else "export the model with dynamic_hw, or give the image a fixed height and width"
        )
        made = "x".join(str(c or "any") for c in out)
        raise StageError(
            f"the model takes {dims[2]}x{dims[3]} images but the crop is {made}: {hint}"
        )
    dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    if dtype not in ("float32", "float16", "float64"):
        raise StageError(f"the model's input is {dtype}; preprocessing produces floats")
    if isinstance(dims[0], int):
        if dynamic_batch:
            log.warning(
                "the model has a fixed batch of %d, so the image input has too "
                "(export with dynamic_batch: true for a dynamic one)",
                dims[0],
            )
        return dims[0], dtype
    if not dynamic_batch:
        return 1, dtype
    return (dims[0] if dims[0] != "?" else "batch"), dtype


def tensor_dims(value: Any) -> list[int | str]:
    """A value's shape; symbolic dims by name ('?' when unnamed)."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def append_postprocess(graph: Any, kind: str, top_k: int = 5) -> None:
    """Softmax (``probabilities``), or softmax + top-k (``scores``, ``indices``), over the last
    axis of the graph's first output, which they replace; other outputs stay as they are."""
    if kind == "none":
        return
    from onnx import TensorProto, helper

    first, rest = graph.output[0], list(graph.output[1:])
    tensor, dims = first.type.tensor_type, tensor_dims(first)
    _check_postprocess(graph, dims, kind, top_k)
    probabilities = "probabilities" if kind == "softmax" else "postprocess/probabilities"
    # axis=-1 is the last axis at every opset (before 13 too: it coerces to [rest, last])
    graph.node.append(
        helper.make_node("Softmax", [first.name], [probabilities], "postprocess/Softmax", axis=-1)
    )
    outputs = [helper.make_tensor_value_info(probabilities, tensor.elem_type, dims)]
    if kind == "topk":
        graph.initializer.append(helper.make_tensor("postprocess/k", _INT64, [1], [top_k]))
        topk = [probabilities, "postprocess/k"]
        graph.node.append(helper.make_node("TopK", topk, ["scores", "indices"], "postprocess/TopK"))
        shape = [*dims[:-1], top_k]
        outputs = [
            helper.make_tensor_value_info("scores", tensor.elem_type, shape),
            helper.make_tensor_value_info("indices", TensorProto.INT64, shape),
        ]
    del graph.output[:]
    graph.output.extend([*outputs, *rest])


def _check_postprocess(graph: Any, dims: list, kind: str, top_k: int) -> None:
    if not dims:
        raise StageError(
            "postprocess needs a class axis, but the model's first output "
            f"'{graph.output[0].name}' has no known shape; set postprocess: none"
        )
    if kind == "topk" and isinstance(dims[-1], int) and top_k > dims[-1]:
        raise StageError(f"top_k is {top_k} but the model has {dims[-1]} classes")
    if taken := {o.name for o in graph.output} & {"probabilities", "scores", "indices"}:
        raise StageError(f"the model already has output(s) {sorted(taken)}; set postprocess: none")
