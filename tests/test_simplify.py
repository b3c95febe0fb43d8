"""simplify: a model onnxsim cannot handle fails clearly, or passes through when asked to."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

pytestmark = pytest.mark.slow


def write_custom_op_model(path):
    """Relu followed by an op from a domain no runtime knows: onnxsim cannot run or check it."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mystery", ["r"], ["y"], domain="com.example"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
    )
    onnx.save(model, str(path))


RECIPE = """
version: 1
name: custom
stages:
  m: {{type: load, source: onnx, path: custom.onnx}}
  s: {{type: simplify, input: m, on_failure: {on_failure}}}
"""


def test_onnxsim_failure_is_a_clear_stage_error(workspace):
    write_custom_op_model(workspace.root / "custom.onnx")
    recipe = workspace.recipe(RECIPE.format(on_failure="error"))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1, result.stderr
    assert "stage 's' failed: onnxsim failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_keep_input_passes_the_model_through(workspace):
    write_custom_op_model(workspace.root / "custom.onnx")
    recipe = workspace.recipe(RECIPE.format(on_failure="keep-input"))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    out = workspace.out / "s"
    assert (out / "model.onnx").read_bytes() == (workspace.out / "m" / "model.onnx").read_bytes()
    assert json.loads((out / "artifact.json").read_text())["meta"]["simplified"] is False
    assert "warning: onnxsim failed" in result.stderr and "keep-input" in result.stderr


def test_test_shapes_put_the_image_size_on_the_image_axes():
    from edgepipe.stages.simplify import _test_shapes

    meta = {
        "data_config": {"input_size": [3, 160, 192]},
        "inputs": [
            {"name": "frames", "shape": ["batch", "height", "width", 3]},  # composed: NHWC
            {"name": "tensor", "shape": ["batch", 3, "height", "width"]},
            {"name": "fixed", "shape": [1, 3, 8, 8]},
        ],
    }
    assert _test_shapes(meta) == {"frames": [1, 160, 192, 3], "tensor": [1, 3, 160, 192]}
