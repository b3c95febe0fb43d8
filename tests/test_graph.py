"""The DAG: order, selection, cycles as ordered paths, artifact kinds, renderings."""

from __future__ import annotations

import pytest

from edgepipe.errors import GraphError
from edgepipe.graph import PipelineGraph
from edgepipe.recipe import parse_recipe

BRANCHES = """
version: 1
name: g
stages:
  simple_b: {type: simplify, input: onnx_b}
  model: {type: load, name: test_resnet}
  onnx_a: {type: export, input: model, opset: 17}
  onnx_b: {type: export, input: model, opset: 18}
  simple_a: {type: simplify, input: onnx_a}
"""


def graph(text: str) -> PipelineGraph:
    return PipelineGraph(parse_recipe(text))


def test_order_is_topological_and_stable():
    order = graph(BRANCHES).order()
    assert order.index("model") < order.index("onnx_a") < order.index("simple_a")
    assert order.index("onnx_b") < order.index("simple_b")
    assert order == graph(BRANCHES).order()
    # ties follow the recipe's own order
    assert order == ["model", "onnx_a", "onnx_b", "simple_b", "simple_a"]


def test_until_takes_ancestors_and_only_takes_exactly():
    g = graph(BRANCHES)
    assert g.select(until=["simple_a"]) == ["model", "onnx_a", "simple_a"]
    assert g.select(only=["onnx_b"]) == ["onnx_b"]
    assert g.select(only=["onnx_b"], until=["onnx_a"]) == ["model", "onnx_a", "onnx_b"]


def test_unknown_selection_suggests_a_stage():
    with pytest.raises(GraphError, match="no stage 'modle' \\(did you mean 'model'\\?\\)"):
        graph(BRANCHES).select(until=["modle"])


def test_cycle_is_reported_as_an_ordered_path():
    text = """
version: 1
name: c
stages:
  a: {type: simplify, input: c}
  b: {type: simplify, input: a}
  c: {type: simplify, input: b}
"""
    with pytest.raises(GraphError) as caught:
        graph(text)
    message = str(caught.value)
    assert "cycle" in message
    path = message.split("cycle: ")[1].split(" → ")
    assert path[0] == path[-1] and len(path) == 4
    for upstream, downstream in zip(path, path[1:], strict=False):
        assert parse_recipe(text).stages[downstream].input == upstream


def test_artifact_kind_mismatch_names_both_sides():
    text = """
version: 1
name: k
stages:
  m: {type: load, name: test_resnet}
  s: {type: simplify, input: m}
"""
    with pytest.raises(GraphError, match="takes an onnx-model as input, but 'm' produces a torch"):
        graph(text)


def test_mermaid_and_dot_list_every_edge():
    g = graph(BRANCHES)
    mermaid, dot = g.mermaid(), g.dot()
    assert mermaid.startswith("flowchart LR")
    for upstream, downstream in [
        ("model", "onnx_a"),
        ("onnx_a", "simple_a"),
        ("onnx_b", "simple_b"),
    ]:
        assert f"{upstream} --> {downstream}" in mermaid
        assert f'"{upstream}" -> "{downstream}";' in dot
