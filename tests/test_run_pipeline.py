"""End to end through the CLI: build, cache hits, explanations, failures, kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import outcomes

from edgepipe.models.torch_model import rebuild

pytestmark = pytest.mark.slow

RECIPE = """
version: 1
name: tiny
stages:
  model:
    type: load
    name: test_efficientnet
  onnx:
    type: export
    input: model
    opset: {opset}
    exporter: torchscript
  simple:
    type: simplify
    input: onnx
"""


def test_build_then_everything_cached(workspace):
    recipe = workspace.recipe(RECIPE.format(opset=17))
    first = workspace.cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    assert outcomes(first.stderr) == {"model": "built", "onnx": "built", "simple": "built"}

    # the ONNX artifact computes what the torch model computes
    module = rebuild(workspace.out / "model", workspace.root)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(str(workspace.out / "simple" / "model.onnx"))
    (actual,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)

    second = workspace.cli("run", str(recipe))
    assert second.returncode == 0, second.stderr
    assert set(outcomes(second.stderr).values()) == {"cached"}


def test_cached_run_imports_no_ml_library(workspace):
    recipe = workspace.recipe(RECIPE.format(opset=17))
    assert workspace.cli("run", str(recipe)).returncode == 0
    stderr, heavy = workspace.cached_run(recipe)
    assert heavy == []
    assert "cached" in stderr


def test_opset_change_reruns_exactly_export_and_simplify(workspace):
    recipe = workspace.recipe(RECIPE.format(opset=17))
    assert workspace.cli("run", str(recipe)).returncode == 0
    recipe.write_text(recipe.read_text().replace("opset: 17", "opset: 18"))

    plan = workspace.cli("plan", str(recipe), "--json")
    assert plan.returncode == 0, plan.stderr
    by_stage = {p["stage"]: p for p in json.loads(plan.stdout)}
    assert by_stage["model"]["status"] == "cached"
    assert by_stage["onnx"]["status"] == "run"
    assert by_stage["onnx"]["reasons"] == ["opset changed: 17 → 18"]
    assert by_stage["simple"]["status"] == "run"
    assert by_stage["simple"]["reasons"] == ["input 'onnx' will be rebuilt"]

    rerun = workspace.cli("run", str(recipe))
    assert rerun.returncode == 0, rerun.stderr
    assert outcomes(rerun.stderr) == {"model": "cached", "onnx": "built", "simple": "built"}


def test_touching_weights_reruns_nothing_but_new_bytes_do(workspace):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = timm.create_model("test_resnet").state_dict()
    weights = workspace.root / "ckpt.safetensors"
    save_file(state, str(weights))
    recipe = workspace.recipe(
        RECIPE.format(opset=17).replace(
            "name: test_efficientnet", "name: test_resnet\n    weights: ckpt.safetensors"
        )
    )
    assert workspace.cli("run", str(recipe)).returncode == 0

    later = time.time() + 5
    os.utime(weights, (later, later))
    touched = workspace.cli("run", str(recipe))
    assert set(outcomes(touched.stderr).values()) == {"cached"}, touched.stderr

    state["fc.bias"] = state["fc.bias"] + 1
    save_file(state, str(weights))
    plan = json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    assert plan[0]["reasons"] == ["file 'weights' changed (different content)"]


def test_weights_are_the_checkpoints(workspace):
    import timm
    from safetensors.torch import load_file

    torch.manual_seed(5)
    source = timm.create_model("test_resnet")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
        workspace.root / "ckpt.pth",
    )
    recipe = workspace.recipe(
        RECIPE.format(opset=17).replace(
            "name: test_efficientnet", "name: test_resnet\n    weights: ckpt.pth"
        )
    )
    assert workspace.cli("run", str(recipe), "--until", "model").returncode == 0
    stored = load_file(str(workspace.out / "model" / "weights.safetensors"))
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(stored[name], tensor)


def test_kill_during_export_then_rerun_completes(workspace):
    recipe = workspace.recipe(
        RECIPE.format(opset=18).replace("exporter: torchscript", "exporter: dynamo")
    )
    assert workspace.cli("run", str(recipe), "--until", "model").returncode == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(workspace.out)],
        cwd=workspace.root,
        env=workspace.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    tmp = workspace.cache / "tmp"
    while time.time() < deadline and not any(p.name.startswith("onnx") for p in _entries(tmp)):
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the multi-second dynamo export
    assert process.poll() is None, "the export finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    rerun = workspace.cli("run", str(recipe))
    assert rerun.returncode == 0, rerun.stderr
    assert outcomes(rerun.stderr) == {"model": "cached", "onnx": "built", "simple": "built"}
    verify = workspace.cli("cache", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "nothing corrupt" in verify.stdout


def _entries(directory):
    return list(directory.iterdir()) if directory.is_dir() else []


def test_external_data_flows_through_simplify_and_parity(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: external
        stages:
          model: {type: load, name: test_vit}
          onnx: {type: export, input: model, exporter: torchscript, external_data: always}
          simple: {type: simplify, input: onnx}
          check: {type: parity, input: simple}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    data = workspace.out / "simple" / "model.onnx.data"
    # onnx and ONNX Runtime refuse external data with several hard links: it must be a copy
    assert data.is_file() and data.stat().st_nlink == 1


def _save_with_external_data(path, location: str, scale: float) -> None:
    import onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten())
    with torch.no_grad():
        model[0].weight.fill_(scale)
    torch.onnx.export(model.eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False)
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=True, location=location, size_threshold=0)


def test_loaded_onnx_external_weights_are_part_of_the_key(workspace):
    _save_with_external_data(workspace.root / "given.onnx", "given.onnx.data", 0.5)
    recipe = workspace.recipe("""
        version: 1
        name: external-source
        stages:
          m: {type: load, source: onnx, path: given.onnx}
    """)
    assert workspace.cli("run", str(recipe)).returncode == 0
    # same graph file, new weights beside it: the artifact is rebuilt, not served stale
    _save_with_external_data(workspace.root / "given.onnx", "given.onnx.data", 2.0)
    plan = workspace.cli("plan", str(recipe))
    assert "file 'external_data:given.onnx.data' changed" in plan.stdout, plan.stdout

    # weights under a name edgepipe does not track are refused with the way out
    _save_with_external_data(workspace.root / "odd.onnx", "weights.bin", 1.0)
    odd = workspace.recipe(
        "version: 1\nname: odd\nstages:\n  m: {type: load, source: onnx, path: odd.onnx}\n",
        name="odd.yaml",
    )
    result = workspace.cli("run", str(odd))
    assert result.returncode == 1
    assert "keeps weights in weights.bin, which is not named after it" in result.stderr
