"""The lockfile: written by a full run, checked without a cache, explains drift per field."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.slow

RECIPE = """
version: 1
name: locked
stages:
  model: {type: load, name: test_resnet}
  onnx: {type: export, input: model, exporter: torchscript, opset: 17}
  simple: {type: simplify, input: onnx}
  check: {type: parity, input: simple}
"""


def test_lock_written_checked_and_drift_explained(workspace, tmp_path):
    recipe = workspace.recipe(RECIPE)
    partial = workspace.cli("run", str(recipe), "--until", "onnx")
    assert partial.returncode == 0 and not recipe.with_suffix(".lock").exists()

    assert workspace.cli("run", str(recipe)).returncode == 0
    lock = yaml.safe_load(recipe.with_suffix(".lock").read_text())
    assert list(lock["stages"]) == ["model", "onnx", "simple", "check"]
    assert lock["stages"]["check"]["parity"]["passed"] is True
    assert lock["stages"]["onnx"]["key_document"]["spec"]["opset"] == 17

    workspace.cache = tmp_path / "fresh-ci-cache"  # a CI runner: no cache at all
    ok = workspace.cli("check", str(recipe))
    assert ok.returncode == 0, ok.stderr

    recipe.write_text(recipe.read_text().replace("opset: 17", "opset: 18"))
    drift = workspace.cli("check", str(recipe))
    assert drift.returncode == 6
    assert "stage 'onnx': opset changed: 17 → 18" in drift.stderr
    assert "stage 'simple': input 'onnx' changed" in drift.stderr
    gated = workspace.cli("run", str(recipe), "--check")
    assert gated.returncode == 6 and "out of date" in gated.stderr
    assert "opset changed: 17 → 18" in workspace.cli("diff", str(recipe)).stdout


def test_check_without_a_lock_says_how_to_make_one(workspace):
    recipe = workspace.recipe(RECIPE)
    result = workspace.cli("check", str(recipe))
    assert result.returncode == 3
    assert "no lockfile" in result.stderr and "edgepipe run" in result.stderr


def test_machine_facts_are_not_drift():
    from edgepipe.lockfile import _same_but_machine

    locked = {"spec": {"batch_sizes": [1]}, "inputs": ["ab"], "extra": {"machine": {"cpu": "A"}}}
    elsewhere = {**locked, "extra": {"machine": {"cpu": "B"}}}
    assert _same_but_machine(elsewhere, locked)
    assert not _same_but_machine({**elsewhere, "inputs": ["cd"]}, locked)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("lock_version: 1\nrecipe: locked\nstages: [1, 2]\n", "'stages' is list"),
        ("lock_version: 1\nrecipe: locked\nstages:\n  model: 5\n", "stage 'model' is int"),
        (
            "lock_version: 1\nrecipe: locked\nstages:\n  model: {type: load, key: 3, output: {}}\n",
            "stage 'model': its key is not a string",
        ),
        ("lock_version: 1\nrecipe: locked\nstages:\n  model: {key: abc}\n", "no stage type"),
    ],
    ids=["stages-list", "entry-int", "key-int", "no-type"],
)
def test_a_misshapen_lock_is_one_readable_error_not_a_crash(workspace, body, message):
    recipe = workspace.recipe(RECIPE)
    recipe.with_suffix(".lock").write_text(body)
    result = workspace.cli("check", str(recipe))
    assert result.returncode == 3, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "rewrite it with a full `edgepipe run`" in result.stderr


def test_a_real_input_change_still_changes_the_lock_and_check_names_it(workspace, tmp_path):
    """What the lock leaves out (measured floats, timings) must not hide what it is for: a new
    weights file or calibration count is drift, named by its field."""
    import timm
    import torch
    from safetensors.torch import save_file

    def write_weights(seed: int) -> None:
        torch.manual_seed(seed)
        weights = timm.create_model("test_resnet").state_dict()
        save_file(weights, str(workspace.root / "w.safetensors"))

    write_weights(0)
    recipe = workspace.recipe(
        """
        version: 1
        name: inputs
        stages:
          model: {type: load, name: test_resnet, weights: w.safetensors}
          onnx: {type: export, input: model, exporter: torchscript}
          int8: {type: quantize, input: onnx, calibration: {count: 4}}
          check: {type: parity, input: int8, kind: int8, thresholds: {min_cosine: 0.5}}
          bench: {type: benchmark, inputs: [onnx, int8, check], warmup_seconds: 0.1,
                  window_seconds: 0.05, max_seconds: 1}
        """
    )
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    lock = recipe.with_suffix(".lock").read_text()
    entries = yaml.safe_load(lock)["stages"]
    assert entries["check"]["output"]["reproducible"] is False and entries["check"]["key"]
    assert entries["check"]["parity"]["thresholds"]["min_cosine"] == 0.5
    assert "key" not in entries["bench"] and "p50" not in lock
    workspace.cache = tmp_path / "fresh-ci-cache"
    assert workspace.cli("check", str(recipe)).returncode == 0

    recipe.write_text(recipe.read_text().replace("count: 4", "count: 8"))
    drift = workspace.cli("check", str(recipe))
    assert drift.returncode == 6 and "stage 'int8': calibration" in drift.stderr, drift.stderr
    assert "4 → 8" in drift.stderr, drift.stderr

    recipe.write_text(recipe.read_text().replace("count: 8", "count: 4"))
    write_weights(1)
    drift = workspace.cli("check", str(recipe))
    assert drift.returncode == 6 and "stage 'model'" in drift.stderr, drift.stderr
    assert "weights" in drift.stderr.split("stage 'model'")[1].splitlines()[0], drift.stderr
