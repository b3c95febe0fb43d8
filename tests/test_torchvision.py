"""`source: torchvision`: models by name through torchvision.models.get_model, the task each
does (inferred from its package), the preprocessing its weights declare, and the same offline
rules as timm."""

from __future__ import annotations

import json

import pytest

RECIPE = """
    version: 1
    name: torchvision-models
    stages:
      resnet: {type: load, source: torchvision, name: resnet18, num_classes: 10}
      resnet_onnx: {type: export, input: resnet}
      resnet_check: {type: parity, input: resnet_onnx}
      seg: {type: load, source: torchvision, name: lraspp_mobilenet_v3_large}
      det: {type: load, source: torchvision, name: ssdlite320_mobilenet_v3_large}
"""


def _meta(workspace, stage: str) -> dict:
    return json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]


@pytest.mark.slow
def test_models_load_by_name_with_their_task_and_preprocessing(workspace):
    # TORCH_HOME is empty (conftest): random weights must never fetch a backbone
    result = workspace.cli("run", str(workspace.recipe(RECIPE)))
    assert result.returncode == 0, result.stderr
    # a classifier: exported and checked like a timm model (parity rebuilds it from the record)
    assert json.loads((workspace.out / "resnet_check" / "parity.json").read_text())["passed"]
    resnet = _meta(workspace, "resnet")
    assert "task" not in resnet and resnet["weights"] == "random"  # classification: the default
    assert resnet["data_config"]["input_size"] == [3, 224, 224]
    assert resnet["data_config"]["crop_pct"] == pytest.approx(224 / 256)  # resize 256, crop 224
    assert resnet["data_config"]["interpolation"] == "bilinear"
    seg, det = _meta(workspace, "seg"), _meta(workspace, "det")
    assert seg["task"] == "segmentation" and seg["data_config"]["input_size"] == [3, 520, 520]
    assert det["task"] == "detection" and det["data_config"]["input_size"] == [3, 320, 320]
    assert det["data_config"]["mean"] == [0.0, 0.0, 0.0]  # it normalises inside the model
    assert not list((workspace.root / "torch-home").rglob("*.pth"))


def test_pretrained_weights_offline_and_unknown_names_are_preflight_errors(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: offline
        stages:
          small: {type: load, source: torchvision, name: resnet18}
          big: {type: load, source: torchvision, name: resnet50, pretrained: true}
          typo: {type: load, source: torchvision, name: resnet5O}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "pretrained torchvision weights for 'resnet50' are not in the local cache" in (
        " ".join(result.stderr.split())
    )
    assert "'resnet5O' is not a torchvision model" in result.stderr
    assert not (workspace.out / "small").exists(), "preflight must stop before any stage runs"


def test_name_is_required_and_timm_only_fields_stay_with_named_sources(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: fields
        stages:
          m: {type: load, source: torchvision}
    """)
    result = workspace.cli("validate", str(recipe))
    assert result.returncode == 3 and "required when source is 'torchvision'" in result.stderr
