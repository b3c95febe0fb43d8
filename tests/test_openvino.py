"""convert-openvino and quantize (OpenVINO/NNCF back end): IRs from ONNX and from torch, fp16
weights and INT8 pass parity; composed models keep their preprocessing; bad settings fail
with the field or stage named."""

from __future__ import annotations

import json

import pytest
from conftest import outcomes

pytestmark = pytest.mark.slow

RECIPE = """
version: 1
name: ov
stages:
  model: {{type: load, name: {model}}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  ir: {{type: convert-openvino, input: onnx}}
  ir_check: {{type: parity, input: ir}}
  int8: {{type: quantize, input: ir, backend: openvino, calibration: {{count: 12}}}}
  int8_check: {{type: parity, input: int8}}
  extra: {extra}
  extra_check: {{type: parity, input: extra}}
"""
HALF = "{type: convert-openvino, input: onnx, compress_to_fp16: true}"
FROM_TORCH = "{type: convert-openvino, input: model}"


def meta(workspace, stage: str) -> dict:
    return json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]


def parity(workspace, stage: str) -> dict:
    return json.loads((workspace.out / stage / "parity.json").read_text())


@pytest.mark.parametrize(
    ("model", "extra", "extra_kind", "model_type"),
    [
        ("test_resnet", HALF, "fp16", "cnn"),
        ("test_vit", FROM_TORCH, "fp32", "transformer"),
    ],
    ids=["test_resnet-fp16", "test_vit-from-torch"],
)
def test_fp32_int8_fp16_and_torch_irs_pass_parity(workspace, model, extra, extra_kind, model_type):
    recipe = workspace.recipe(RECIPE.format(model=model, extra=extra))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    for stage, kind in (("ir", "fp32"), ("int8", "int8"), ("extra", extra_kind)):
        assert (workspace.out / stage / "model.xml").is_file()
        assert (workspace.out / stage / "model.bin").is_file()
        assert meta(workspace, stage)["precision"] == kind
        report = parity(workspace, f"{stage}_check")
        assert report["passed"] and report["kind"] == kind, report["metrics"]

    ir = meta(workspace, "ir")
    assert ir["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["?", 3, 160, 160]}]
    assert ir["outputs"] == [{"name": "output", "dtype": "float32", "shape": ["?", 1000]}]
    assert ir["data_config"]["input_size"] == [3, 160, 160] and "opset" not in ir
    quantization = meta(workspace, "int8")["quantization"]
    assert quantization["model_type"] == model_type and quantization["fake_quantize"] > 0
    assert quantization["calibration"]["samples"] == quantization["subset_size"] == 12
    size = (workspace.out / "ir" / "model.bin").stat().st_size
    assert (workspace.out / "int8" / "model.bin").stat().st_size < size / 2
    if extra_kind == "fp16":
        assert (workspace.out / "extra" / "model.bin").stat().st_size < size * 0.6
    else:  # from torch: same names and shapes as the IR converted from ONNX
        assert meta(workspace, "extra")["inputs"] == ir["inputs"]

    if model == "test_resnet":  # once is enough: the cached path does not depend on the model
        stderr, imported = workspace.cached_run(recipe)
        assert list(outcomes(stderr).values()) == ["cached"] * 8, stderr
        assert imported == []


EXTRAS = """
version: 1
name: ov-extras
stages:
  model: {type: load, name: test_resnet}
  onnx: {type: export, input: model, exporter: torchscript}
  e2e: {type: compose-preprocessing, input: onnx, postprocess: softmax,
        image: {height: 160, width: 160}}
  e2e_ir: {type: convert-openvino, input: e2e}
  e2e_check: {type: parity, input: e2e_ir}
  e2e_int8: {type: quantize, input: e2e_ir, backend: openvino, calibration: {count: 8}}
  e2e_int8_check: {type: parity, input: e2e_int8}
  any_size: {type: compose-preprocessing, input: onnx}
  any_size_ir: {type: convert-openvino, input: any_size}
  any_size_check: {type: parity, input: any_size_ir}
  fixed: {type: convert-openvino, input: onnx, input_shape: [2, 3, 160, 160]}
  fixed_int8: {type: quantize, input: fixed, backend: openvino, calibration: {count: 6}}
  wrong_rank: {type: convert-openvino, input: onnx, input_shape: [1, 160, 160]}
  not_there: {type: quantize, input: fixed, backend: openvino, calibration: {count: 2},
              openvino: {ignored_names: [no_such_node]}}
"""


def test_composed_models_static_shapes_and_bad_settings(workspace):
    recipe = workspace.recipe(EXTRAS)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1  # wrong_rank and not_there fail; every other stage is built
    assert set(outcomes(result.stderr).values()) == {"built", "failed"}, result.stderr

    ir = meta(workspace, "e2e_ir")
    assert ir["preprocessing"] == meta(workspace, "e2e")["preprocessing"]
    assert ir["postprocess"] == "softmax"
    assert ir["inputs"][0]["dtype"] == "uint8" and ir["inputs"][0]["shape"][1:] == [160, 160, 3]
    report = parity(workspace, "e2e_check")
    assert report["passed"] and report["kind"] == "composed"
    # the softmax after the classifier is not attention: still quantized as a conv net
    assert meta(workspace, "e2e_int8")["quantization"]["model_type"] == "cnn"
    # composed + INT8: each gate is the looser of the two kinds' (unset in either: not gated)
    report = parity(workspace, "e2e_int8_check")
    assert report["passed"] and report["kind"] == "composed+int8", report
    # photos of any size are downscaled with antialias, as plain ops OpenVINO runs like PIL
    report = parity(workspace, "any_size_check")
    assert report["passed"] and report["kind"] == "composed", report

    assert meta(workspace, "fixed")["inputs"][0]["shape"] == [2, 3, 160, 160]
    int8 = meta(workspace, "fixed_int8")
    assert int8["inputs"][0]["shape"] == [2, 3, 160, 160]
    quantization = int8["quantization"]
    assert quantization["calibration"]["samples"] == 6 and quantization["subset_size"] == 3
    assert "stage 'wrong_rank' failed: input_shape [1, 160, 160] has 3 dims" in result.stderr
    assert "stage 'not_there' failed: NNCF refused the settings" in result.stderr
    assert "no_such_node" in result.stderr


@pytest.mark.parametrize(
    ("stage", "field"),
    [
        ("{type: quantize, input: ir, backend: openvino, mode: fp16}", "mode"),
        ("{type: convert-openvino, input: onnx, input_shape: [1, 3, x, 160]}", "input_shape"),
    ],
    ids=["nncf-fp16", "bad-dim"],
)
def test_bad_openvino_settings_are_recipe_errors(workspace, stage, field):
    recipe = workspace.recipe(f"""
        version: 1
        name: bad
        stages:
          model: {{type: load, name: test_resnet}}
          onnx: {{type: export, input: model}}
          ir: {{type: convert-openvino, input: onnx}}
          bad: {stage}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 3, result.stderr
    assert "stage 'bad'" in result.stderr and field in result.stderr
    assert not workspace.out.exists()
