"""export-torchscript: traced, scripted and lite-interpreter models pass parity; a model that
cannot be scripted, or whose trace froze an input-dependent value, fails with a readable message."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import Workspace, outcomes

pytestmark = pytest.mark.slow

XNNPACK = getattr(torch._C, "_is_xnnpack_enabled", lambda: True)()

TINY_NETS = """
from torch import nn


class VarArgsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x, *extra):  # TorchScript cannot compile *args
        return self.head(self.conv(x).mean((2, 3)))


class PeakScaledNet(VarArgsNet):
    def forward(self, x):  # int() of a tensor: a trace keeps the example's value
        peak = int(x.flatten(1).argmax(1)[0])
        return self.head(self.conv(x).mean((2, 3))) * (1 + peak % 7)
"""

CUSTOM = """
version: 1
name: custom
stages:
  varargs: {type: load, source: callable, factory: "tiny_nets:VarArgsNet",
            data_config: {input_size: [3, 32, 32]}}
  varargs_traced: {type: export-torchscript, input: varargs}
  varargs_scripted: {type: export-torchscript, input: varargs, method: script}
  peak: {type: load, source: callable, factory: "tiny_nets:PeakScaledNet",
         data_config: {input_size: [3, 32, 32]}}
  peak_traced: {type: export-torchscript, input: peak}
  peak_scripted: {type: export-torchscript, input: peak, method: script}
"""


def line_of(code: str) -> int:
    return next(n for n, text in enumerate(TINY_NETS.splitlines(), 1) if code in text)


def meta(workspace, stage: str) -> dict:
    return json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]


def parity(workspace, stage: str) -> dict:
    report = json.loads((workspace.out / stage / "parity.json").read_text())
    assert report["passed"] and report["kind"] == "fp32"
    for group in ("images", "random"):
        metrics = report["metrics"][group]["output"]
        assert metrics["cosine_min"] > 0.9999 and metrics["max_abs_error"] < 1e-4, metrics
    return report


def test_resnet_traced_scripted_and_lite_pass_parity_and_rebuild_byte_identical(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: resnet
        stages:
          model: {type: load, name: test_resnet}
          ts: {type: export-torchscript, input: model}
          check: {type: parity, input: ts}
          scripted: {type: export-torchscript, input: model, method: script, freeze: false}
          check_scripted: {type: parity, input: scripted}
          lite: {type: export-torchscript, input: model, lite_interpreter: true}
          check_lite: {type: parity, input: lite}
    """)
    first = workspace.cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    assert (workspace.out / "ts" / "model.pt").is_file()
    facts = meta(workspace, "ts")
    assert facts["model_file"] == "model.pt" and facts["method"] == "trace"
    assert facts["precision"] == "fp32" and facts["dynamic_batch"] is True
    assert facts["data_config"]["input_size"] == [3, 160, 160]
    assert not facts["lite_interpreter"] and not facts["optimized_for_mobile"]
    assert meta(workspace, "scripted")["method"] == "script"
    assert meta(workspace, "lite")["model_file"] == "model.ptl"
    assert not (workspace.out / "lite" / "model.pt").exists()
    for check in ("check", "check_scripted", "check_lite"):
        parity(workspace, check)

    again = workspace.cli("run", str(recipe))
    assert again.returncode == 0, again.stderr
    assert set(outcomes(again.stderr).values()) == {"cached"}

    # the same weights give the same bytes, so a forced re-export keeps parity cached
    forced = workspace.cli("run", str(recipe), "--force", "ts")
    assert forced.returncode == 0, forced.stderr
    assert outcomes(forced.stderr)["ts"] == "built" and outcomes(forced.stderr)["check"] == "cached"


def test_vit_trace_warnings_are_shown_and_parity_passes(workspace):
    recipe = workspace.recipe("""
        version: 1
        name: vit
        stages:
          model: {type: load, name: test_vit}
          ts: {type: export-torchscript, input: model, batch_size: 2}
          check: {type: parity, input: ts}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    # timm's ViT converts tensors to Python values (size checks): the user is told where
    assert "trace warning: Converting a tensor to a Python" in result.stderr
    assert "timm/" in result.stderr
    assert meta(workspace, "ts")["batch_size"] == 2
    parity(workspace, "check")


MOBILE = """
version: 1
name: mobile
stages:
  model: {type: load, name: test_resnet}
  mobile: {type: export-torchscript, input: model, optimize_for_mobile: true,
           lite_interpreter: true}
  check: {type: parity, input: mobile}
"""


@pytest.mark.skipif(not XNNPACK, reason=f"torch {torch.__version__} is built without XNNPACK")
def test_mobile_optimized_lite_model_passes_parity(workspace):
    result = workspace.cli("run", str(workspace.recipe(MOBILE)))
    assert result.returncode == 0, result.stderr
    assert (workspace.out / "mobile" / "model.ptl").is_file()
    assert meta(workspace, "mobile")["optimized_for_mobile"] is True
    parity(workspace, "check")


@pytest.mark.skipif(XNNPACK, reason="this torch has XNNPACK: optimize_for_mobile works")
def test_optimize_for_mobile_without_xnnpack_fails_before_running(workspace):
    result = workspace.cli("run", str(workspace.recipe(MOBILE)))
    assert result.returncode == 4, result.stderr
    assert "stage 'mobile'" in result.stderr and "XNNPACK" in result.stderr
    assert "set optimize_for_mobile: false" in result.stderr
    assert "Traceback" not in result.stderr and not (workspace.out / "model").exists()


def test_optimize_for_mobile_cannot_skip_freezing(workspace):
    recipe = workspace.recipe(
        MOBILE.replace("optimize_for_mobile: true", "freeze: false, optimize_for_mobile: true")
    )
    result = workspace.cli("validate", str(recipe))
    assert result.returncode == 3, result.stderr
    assert "stage 'mobile': field 'freeze'" in result.stderr


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """One run over both hand-written models: each CLI run costs seconds of imports."""
    workspace = Workspace(tmp_path_factory.mktemp("custom"))
    (workspace.root / "tiny_nets.py").write_text(TINY_NETS)
    result = workspace.cli("run", str(workspace.recipe(CUSTOM)))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_unscriptable_model_suggests_trace(custom_run):
    status = outcomes(custom_run.stderr)
    assert status["varargs_scripted"] == "failed" and status["varargs_traced"] == "built"
    assert "stage 'varargs_scripted' failed: method: script failed" in custom_run.stderr
    line = line_of("*extra")
    assert f"tiny_nets.py, line {line}: def forward(self, x, *extra)" in custom_run.stderr
    assert "use method: trace" in custom_run.stderr


def test_trace_that_froze_an_input_dependent_value_fails(custom_run):
    status = outcomes(custom_run.stderr)
    # scripting keeps the computation on the input, so that export is right
    assert status["peak_traced"] == "failed" and status["peak_scripted"] == "built"
    failure = next(ln for ln in custom_run.stderr.splitlines() if "'peak_traced' failed" in ln)
    assert "does not compute what the eager model does" in failure
    assert "Converting a tensor to a Python integer" in failure
    assert f"tiny_nets.py:{line_of('peak = int(')}" in failure
    assert "try method: script" in failure


def test_the_same_model_saves_to_the_same_bytes_from_any_process(tmp_path):
    """Without the debug records (the tracer's Python call stack), a forked stage and an
    in-process one write identical TorchScript files: the lockfile's digest holds."""
    import hashlib
    import zipfile

    from conftest import Workspace

    recipe_text = (
        "version: 1\nname: ts-bytes\nstages:\n"
        "  model: {type: load, name: test_resnet}\n"
        "  ts: {type: export-torchscript, input: model}\n"
    )
    digests = []
    for name, extra in (("forked", []), ("in-process", ["--in-process"])):
        workspace = Workspace(tmp_path / name)
        workspace.root.mkdir()
        recipe = workspace.recipe(recipe_text)
        result = workspace.cli("run", str(recipe), *extra)
        assert result.returncode == 0, result.stderr
        saved = workspace.out / "ts" / "model.pt"
        assert not any("debug_pkl" in n for n in zipfile.ZipFile(saved).namelist())
        digests.append(hashlib.sha256(saved.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
