"""Which quantized nodes cost the most accuracy, measured rather than guessed.

ONNX Runtime's ``qdq_loss_debug`` runs the float model and a QDQ model on the same inputs and
gives, for every quantized activation, its signal-to-quantization-noise ratio against the float
model (dB; higher is better). Error accumulates along the graph, so a node's cost is what it
*loses*: the SQNR of its input minus the SQNR of the next quantized activation after it. The
first convolution of EfficientNet-Lite0, for one, takes the image at ~40 dB and hands on 26 dB.
"""

from __future__ import annotations

__all__ = ["sensitive_nodes"]

from pathlib import Path
from typing import Any

_HOPS = 4  # how far past a node to look for the next quantized activation


def sensitive_nodes(
    float_model: Path,
    qdq_model: Path,
    input_name: str,
    samples: list[Any],
    scratch: Path,
    op_types: list[str],
) -> list[tuple[str, float]]:
    """(node name, dB lost) for the quantized nodes of ``qdq_model``, most costly first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    activations = {}
    for name, model in (("float", float_model), ("qdq", qdq_model)):
        augmented = scratch / f"sensitivity-{name}.onnx"
        modify_model_output_intermediate_tensors(str(model), str(augmented))
        activations[name] = collect_activations(str(augmented), _Inputs(input_name, samples))
        augmented.unlink()
    matched = create_activation_matching(activations["qdq"], activations["float"])
    sqnr = {
        tensor: errors["xmodel_err"]
        for tensor, errors in compute_activation_error(matched).items()
        if "xmodel_err" in errors
    }
    graph = onnx.load(str(float_model), load_external_data=False).graph
    quantized = _quantized_node_names(qdq_model)
    losses = [
        (node.name, loss)
        for node in graph.node
        if node.op_type in op_types
        and node.name in quantized
        and (loss := _loss(node, graph, sqnr)) is not None
    ]
    return sorted(losses, key=lambda item: -item[1])


def _loss(node: Any, graph: Any, sqnr: dict[str, float]) -> float | None:
    inputs = [sqnr[name] for name in node.input if name in sqnr]
    after = _next_measured(node.output[0], graph, sqnr)
    if not inputs or after is None:
        return None
    return min(inputs) - after


def _next_measured(tensor: str, graph: Any, sqnr: dict[str, float]) -> float | None:
    """SQNR of ``tensor`` or of the first measured tensor downstream (Relu/Clip between)."""
    frontier = [tensor]
    for _ in range(_HOPS):
        measured = [sqnr[t] for t in frontier if t in sqnr]
        if measured:
            return min(measured)
        frontier = [o for n in graph.node if set(n.input) & set(frontier) for o in n.output]
    return None


def _quantized_node_names(qdq_model: Path) -> set[str]:
    """Float-model node names whose weights or inputs the QDQ model dequantizes."""
    import onnx

    graph = onnx.load(str(qdq_model), load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if set(n.input) & dequantized}


class _Inputs:
    """The iterable reader ``collect_activations`` expects."""

    def __init__(self, name: str, samples: list[Any]):
        self.name, self.samples = name, samples

    def __iter__(self):
        return iter({self.name: sample} for sample in self.samples)
