"""A failure ends in one readable message with a meaningful exit code, and loses nothing."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

FACTORY = """
import torch


class Net(torch.nn.Module):
    def __init__(self, width, explode=False, branchy=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3)
        self.explode = explode
        self.branchy = branchy

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        if self.branchy and y.sum() > 0:  # data-dependent branch: torch.export refuses it
            return -y
        if self.explode:
            # ONNX has no SVD, and neither exporter can decompose it
            return torch.linalg.svdvals(y.reshape(-1, 2, 2))
        return y


def build(width=4, explode=False, branchy=False):
    return Net(width, explode, branchy)
"""

TWO_BRANCHES = """
version: 1
name: branches
stages:
  good:
    type: load
    source: callable
    factory: nets:build
    model_kwargs: {width: 4}
    data_config: {input_size: [3, 32, 32]}
  bad:
    type: load
    source: callable
    factory: nets:build
    model_kwargs: {width: 4, explode: true}
    data_config: {input_size: [3, 32, 32]}
  good_onnx:
    type: export
    input: good
    exporter: torchscript
  bad_onnx:
    type: export
    input: bad
    exporter: auto
  bad_simple:
    type: simplify
    input: bad_onnx
"""


def test_failed_stage_skips_descendants_and_keeps_the_rest(workspace):
    (workspace.root / "nets.py").write_text(FACTORY)
    recipe = workspace.recipe(TWO_BRANCHES)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "stage 'bad_onnx' failed: the model could not be exported" in result.stderr
    assert "dynamo exporter: DispatchError: No ONNX function found" in result.stderr
    assert "torchscript exporter: UnsupportedOperatorError" in result.stderr
    assert "linalg_svd" in result.stderr and "try a higher opset" in result.stderr
    assert "not run because an input failed: bad_simple" in result.stderr
    assert (workspace.out / "good_onnx" / "model.onnx").is_file()

    plan = json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    status = {p["stage"]: p["status"] for p in plan}
    assert status == {
        "good": "cached",
        "bad": "cached",
        "good_onnx": "cached",
        "bad_onnx": "run",
        "bad_simple": "run",
    }
    assert workspace.cli("cache", "verify").returncode == 0


def test_factory_source_change_reruns_load(workspace):
    (workspace.root / "nets.py").write_text(FACTORY)
    recipe = workspace.recipe(TWO_BRANCHES)
    assert workspace.cli("run", str(recipe), "--until", "good_onnx").returncode == 0
    edited = FACTORY.replace("self.conv(x).mean((2, 3))", "self.conv(x).amax((2, 3))")
    assert edited != FACTORY
    (workspace.root / "nets.py").write_text(edited)
    plan = json.loads(workspace.cli("plan", str(recipe), "--json", "--until", "good").stdout)
    assert plan[0]["status"] == "run"
    assert plan[0]["reasons"] == ["file 'factory_source_0' changed (different content)"]


def test_offline_pretrained_is_a_preflight_error_before_anything_runs(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: offline
        stages:
          small:
            type: load
            name: test_resnet
          big:
            type: load
            name: resnet18.a1_in1k
            pretrained: true
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "stage 'big' (load): pretrained weights for 'resnet18.a1_in1k' are not cached"
        in result.stderr
    )
    assert "weights:" in result.stderr and "pretrained: false" in result.stderr
    assert not (workspace.out / "small").exists(), "preflight must stop before any stage runs"


def test_unknown_timm_model_is_a_preflight_error(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: typo
        stages:
          m: {type: load, name: resnet5O}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 4
    assert "'resnet5O' is not a timm model" in result.stderr


def test_unknown_pretrained_tag_is_a_preflight_error(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: tag
        stages:
          m: {type: load, name: resnet18.bogus_tag, pretrained: true}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 4
    assert "timm has no pretrained tag 'resnet18.bogus_tag'; available: resnet18." in result.stderr


def test_checkpoint_that_does_not_fit_names_the_fix(workspace):
    import timm
    import torch

    torch.save(
        timm.create_model("test_resnet", num_classes=10).state_dict(), workspace.root / "ten.pth"
    )
    recipe = workspace.recipe("""
        version: 1
        name: mismatch
        stages:
          m: {type: load, name: test_resnet, weights: ten.pth}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1
    assert "does not fit the model" in result.stderr
    assert "num_classes" in result.stderr
    assert "Traceback" not in result.stderr


def test_pickled_module_is_refused_by_weights_only(workspace):
    import timm
    import torch

    torch.save(timm.create_model("test_resnet"), workspace.root / "whole.pth")
    recipe = workspace.recipe("""
        version: 1
        name: pickled
        stages:
          m: {type: load, name: test_resnet, weights: whole.pth}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 1
    assert "weights_only=True" in result.stderr


def test_onnx_file_enters_the_graph(workspace):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 16, 16),),
        str(workspace.root / "given.onnx"),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
    )
    recipe = workspace.recipe("""
        version: 1
        name: given
        stages:
          m: {type: load, source: onnx, path: given.onnx}
          s: {type: simplify, input: m}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    meta = json.loads((workspace.out / "s" / "artifact.json").read_text())["meta"]
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["shape"] == [1, 3, 16, 16]


def test_auto_exporter_falls_back_and_says_so(workspace):
    (workspace.root / "nets.py").write_text(FACTORY)
    recipe = workspace.recipe("""
        version: 1
        name: fallback
        stages:
          m:
            type: load
            source: callable
            factory: nets:build
            model_kwargs: {branchy: true}
            data_config: {input_size: [3, 16, 16]}
          onnx: {type: export, input: m}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    assert "warning: the dynamo exporter failed" in result.stderr
    assert "exported with torchscript instead" in result.stderr
    meta = json.loads((workspace.out / "onnx" / "artifact.json").read_text())["meta"]
    assert meta["exporter"] == "torchscript"


def test_in_process_run_keeps_a_chatty_stage_log(workspace):
    # the stage's result (with its captured output) once went through a pipe nobody was reading
    # yet, so anything over the 64 KiB pipe buffer hung the run
    (workspace.root / "chatty.py").write_text(
        "import torch\n"
        "def build():\n"
        "    for i in range(2000):\n"
        "        print(f'building layer {i:04d} ' + 'x' * 60)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())\n"
    )
    recipe = workspace.recipe("""
        version: 1
        name: chatty
        stages:
          m:
            type: load
            source: callable
            factory: chatty:build
            data_config: {input_size: [3, 8, 8]}
    """)
    result = workspace.cli("run", str(recipe), "--in-process", timeout=60)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(p.read_text()) for p in (workspace.cache / "ac").rglob("*.json")]
    assert "building layer 1999" in record["log"], record["log"][-500:]
