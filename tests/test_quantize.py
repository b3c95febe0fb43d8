"""quantize (ONNX Runtime back end): INT8 static/dynamic and FP16 artifacts pass parity; bad
calibration data is refused before anything runs; calibration content is in the cache key."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

RECIPE = """
version: 1
name: quant
stages:
  model: {{type: load, name: {model}}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  static: {{type: quantize, input: onnx, calibration: {{count: 8}}}}
  static_check: {{type: parity, input: static}}
  dynamic: {{type: quantize, input: onnx, mode: dynamic}}
  dynamic_check: {{type: parity, input: dynamic}}
  half: {{type: quantize, input: onnx, mode: fp16}}
  half_check: {{type: parity, input: half}}
"""


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
def test_int8_and_fp16_artifacts_pass_parity(workspace, model):
    recipe = workspace.recipe(RECIPE.format(model=model))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    for stage, kind in (("static", "int8"), ("dynamic", "int8"), ("half", "fp16")):
        meta = json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]
        assert meta["precision"] == kind
        report = json.loads((workspace.out / f"{stage}_check" / "parity.json").read_text())
        assert report["passed"] and report["kind"] == kind
    static_meta = json.loads((workspace.out / "static" / "artifact.json").read_text())["meta"]
    assert static_meta["quantization"]["op_types"] == ["Conv", "MatMul", "Gemm"]
    onnx_size = (workspace.out / "onnx" / "model.onnx").stat().st_size
    assert (workspace.out / "static" / "model.onnx").stat().st_size < onnx_size / 2


def test_dynamic_on_a_conv_net_warns(workspace):
    recipe = workspace.recipe(RECIPE.format(model="test_resnet"))
    result = workspace.cli("run", str(recipe), "--until", "dynamic")
    assert result.returncode == 0, result.stderr
    assert "warning: this graph is conv-heavy" in result.stderr


CALIBRATED = """
version: 1
name: calib
stages:
  model: {type: load, name: test_resnet}
  onnx: {type: export, input: model, exporter: torchscript}
  int8: {type: quantize, input: onnx, calibration: {images: calib, count: 4}}
"""


def test_missing_calibration_folder_is_a_recipe_error(workspace):
    recipe = workspace.recipe(CALIBRATED)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 3, result.stderr
    assert "folder not found: calib" in result.stderr and "stage 'int8'" in result.stderr


def test_empty_or_non_image_calibration_folder_stops_before_anything_runs(workspace):
    recipe = workspace.recipe(CALIBRATED)
    (workspace.root / "calib").mkdir()
    (workspace.root / "calib" / "notes.txt").write_text("not an image")
    empty = workspace.cli("run", str(recipe))
    assert empty.returncode == 4, empty.stderr
    assert "holds no images" in empty.stderr
    assert not (workspace.out / "model").exists()

    (workspace.root / "calib" / "fake.jpg").write_text("not a jpeg either")
    broken = workspace.cli("run", str(recipe))
    assert broken.returncode == 4
    assert "fake.jpg is not a readable image" in broken.stderr


def test_calibration_images_are_part_of_the_key(workspace):
    import skimage.data
    from PIL import Image

    recipe = workspace.recipe(CALIBRATED)
    (workspace.root / "calib").mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(
            workspace.root / "calib" / f"{name}.png"
        )
    assert workspace.cli("run", str(recipe)).returncode == 0
    Image.fromarray(skimage.data.chelsea()).save(workspace.root / "calib" / "chelsea.png")
    plan = json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    by_stage = {p["stage"]: p for p in plan}
    assert by_stage["onnx"]["status"] == "cached"
    assert by_stage["int8"]["reasons"] == ["file 'calibration_images' changed (different content)"]


def test_a_large_calibration_folder_is_sampled_evenly(tmp_path):
    """A sorted ImageFolder cut at its first files would calibrate on its first class only."""
    from PIL import Image

    from edgepipe.stages.quantize.calibration import (
        CalibrationSpec,
        _chosen_paths,
        describe_calibration,
    )

    for label in ("ant", "bee", "cat", "dog"):
        (tmp_path / "calib" / label).mkdir(parents=True)
        for index in range(25):
            Image.new("RGB", (8, 8)).save(tmp_path / "calib" / label / f"{index:02d}.png")
    spec = CalibrationSpec(images="calib", count=16)
    chosen = _chosen_paths(spec, tmp_path)
    assert len(chosen) == 16 and len({p.parent.name for p in chosen}) == 4
    assert chosen == _chosen_paths(spec, tmp_path)  # seeded: the same every run
    described = describe_calibration(spec, tmp_path)
    assert described["distinct_images"] == 16 and described["samples"] == 16
