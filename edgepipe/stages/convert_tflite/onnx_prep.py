"""The ONNX model as onnx2tf should see it: exact rewrites around what its converter or its
INT8 quantizer cannot take, each one recorded in the artifact's meta.

- A dynamic batch becomes 1: a TFLite model has a fixed batch (onnx2tf's ``-b 1`` comes too
  late for the edge padding below, which it then lowers through dynamic ``SHAPE``/``FILL`` ops
  that its INT8 quantizer rejects). The runtime feeds a larger batch one sample at a time.
- ``MaxPool`` with explicit pads: onnx2tf pads with -inf through ``PADV2``, which its
  full-integer quantizer rejects ("Unsupported op for strict full integer quantization:
  PADV2"). Padding by repeating the edge (``Pad`` mode ``edge``, then an unpadded ``MaxPool``)
  gives the same maxima: every window still holds the border value it would have compared
  the -inf padding with, because ONNX requires pads smaller than the kernel.
"""

from __future__ import annotations

__all__ = ["prepare_for_onnx2tf"]

from pathlib import Path
from typing import Any


def prepare_for_onnx2tf(source: Path, target: Path) -> list[str]:
    """Write ``source`` (an ONNX file, external data included) to ``target`` with the
    rewrites; return one line per rewrite made."""
    import onnx

    model = onnx.load(str(source))
    done = _batch_of_one(model.graph) + _edge_pad_max_pools(model.graph)
    onnx.save(model, str(target))
    return done


def _batch_of_one(graph: Any) -> list[str]:
    fixed = []
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            fixed.append(value.name)
            dims[0].dim_value = 1
    if not fixed:
        return []
    del graph.value_info[:]  # inferred shapes that still carry the symbolic batch
    return [f"batch of 1 (was dynamic) on {', '.join(fixed)}"]


def _edge_pad_max_pools(graph: Any) -> list[str]:
    import numpy as np
    from onnx import helper, numpy_helper

    nodes, done = [], []
    for node in graph.node:
        pads = _pads(node) if node.op_type == "MaxPool" else []
        if not any(pads):
            nodes.append(node)
            continue
        spatial = len(pads) // 2
        pads_name = f"{node.name or node.output[0]}_edge_pads"
        padded = f"{node.input[0]}_edge_padded_{len(done)}"
        full = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]  # no padding on N and C
        graph.initializer.append(numpy_helper.from_array(np.array(full, np.int64), pads_name))
        nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="edge"))
        for attribute in node.attribute:
            if attribute.name == "pads":
                attribute.ints[:] = [0] * len(pads)
        node.input[0] = padded
        nodes.append(node)
        done.append(f"MaxPool {node.name or node.output[0]}: pads {pads} → edge Pad")
    del graph.node[:]
    graph.node.extend(nodes)
    return done


def _pads(node: Any) -> list[int]:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == "auto_pad" and helper.get_attribute_value(attribute) not in (
            b"NOTSET",
            "NOTSET",
        ):
            return []  # SAME_* padding: onnx2tf maps it onto TFLite's own padding
        if attribute.name == "pads":
            return list(attribute.ints)
    return []
