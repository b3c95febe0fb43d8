"""Isolated toolchains (edgepipe/toolchains): keyed by their exact pins, built once under a lock,
never used half-built, and checked by preflight before any stage runs.

The mechanism tests use tiny toolchains of this interpreter's Python (a venv in ~3 s); the
offline preflight uses the real onnx2tf toolchain with the package registry made unreachable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

from edgepipe.errors import ToolchainError
from edgepipe.toolchains import (
    Toolchain,
    ToolchainOverride,
    build_toolchain,
    built_python,
    declared_toolchain,
    toolchain_problems,
)

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
TINY = Toolchain("tiny", HERE, (), probe=("json",))
# the package registry made unreachable, and every local wheel source and cache out of reach
OFFLINE = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "PIP_NO_CACHE_DIR": "1",
}


def test_the_pins_are_the_key_and_the_folder():
    onnx2tf = declared_toolchain("onnx2tf")
    facts = onnx2tf.key_facts()
    assert facts["python"] == "3.12" and facts["requirements"]["onnx2tf"] == "2.6.9"
    assert facts["requirements"]["onnx"] == "1.20.1"  # the pin that conflicts with edgepipe's
    newer = ToolchainOverride(requirements=[*onnx2tf.requirements[:-1], "zzz==1.0"])
    changed = newer.apply(onnx2tf)
    assert changed.folder_name != onnx2tf.folder_name
    assert ToolchainOverride().apply(onnx2tf) == onnx2tf
    assert ToolchainOverride(python="3.13").apply(onnx2tf).folder_name.startswith("onnx2tf-py3.13")


@pytest.mark.parametrize(
    "line", ["onnx2tf>=2.6", "onnx2tf", "onnx2tf[torch]==2.6.9", "git+https://x/y.git"]
)
def test_a_toolchain_takes_exact_pins_only(line):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not an exact pin"):
        ToolchainOverride(requirements=[line])


def test_built_once_and_reused(tmp_path):
    python = build_toolchain(TINY, tmp_path)
    marker = json.loads((python.parent.parent / "edgepipe-toolchain.json").read_text())
    assert marker["toolchain"] == TINY.key_facts()
    assert built_python(TINY, tmp_path) == python
    stamp = (python.parent.parent / "edgepipe-toolchain.json").stat().st_mtime_ns
    assert build_toolchain(TINY, tmp_path) == python  # reused, not rebuilt
    assert (python.parent.parent / "edgepipe-toolchain.json").stat().st_mtime_ns == stamp
    assert toolchain_problems(TINY, tmp_path) == []


_BUILD = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from edgepipe.toolchains import Toolchain, build_toolchain
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tiny = Toolchain("tiny", sys.argv[2], (), probe=("json",))
    print(build_toolchain(tiny, Path(sys.argv[1])), flush=True)
    """
)


def _build_in_child(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _BUILD, str(root), HERE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_runs_at_once_build_it_once(tmp_path):
    first, second = _build_in_child(tmp_path), _build_in_child(tmp_path)
    results = [process.communicate(timeout=120) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    logs = "".join(stderr for _, stderr in results)
    assert logs.count("building toolchain 'tiny'") == 1, logs
    assert results[0][0] == results[1][0]  # the same interpreter for both


def test_a_killed_build_is_never_used_and_the_next_build_completes(tmp_path):
    child = _build_in_child(tmp_path)
    env = tmp_path / TINY.folder_name
    deadline = time.monotonic() + 60
    while not env.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # inside `python -m venv`: the folder is there, the marker is not
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert env.exists() and not (env / "edgepipe-toolchain.json").exists()
    assert built_python(TINY, tmp_path) is None  # half-built: not used
    python = build_toolchain(TINY, tmp_path)
    done = subprocess.run([str(python), "-c", "import json"], check=False)
    assert done.returncode == 0
    assert built_python(TINY, tmp_path) == python


def test_no_python_of_that_version_is_named_with_the_fix(tmp_path):
    missing = Toolchain("future", "3.99", ("six==1.17.0",))
    (problem,) = toolchain_problems(missing, tmp_path)
    assert "toolchain 'future'" in problem and "Python 3.99" in problem
    assert "pyenv install 3.99" in problem and "EDGEPIPE_PYTHON_3_99" in problem
    with pytest.raises(ToolchainError, match="Python 3.99"):
        build_toolchain(missing, tmp_path)
    assert not (tmp_path / missing.folder_name).exists()


def test_a_failed_build_leaves_nothing_but_its_log(tmp_path, monkeypatch):
    # a pin no wheel source has (here: none reachable at all)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    broken = Toolchain("broken", HERE, ("six==1.17.0",))
    with pytest.raises(ToolchainError, match="could not install the pins") as raised:
        build_toolchain(broken, tmp_path)
    assert "whole log" in str(raised.value)
    assert not (tmp_path / broken.folder_name).exists()
    assert (tmp_path / f"{broken.folder_name}.failed.log").read_text()


def test_offline_with_nothing_built_preflight_stops_the_run_before_any_stage(workspace):
    from edgepipe.toolchains import find_python

    if find_python("3.12") is None:
        pytest.skip("no Python 3.12 here: preflight names that instead (tested above)")
    recipe = workspace.recipe(
        """
        version: 1
        name: offline-tflite
        stages:
          model: {type: load, source: timm, name: test_efficientnet, pretrained: false}
          onnx: {type: export, input: model, opset: 18}
          tflite: {type: convert-tflite, input: onnx}
        """
    )
    env = {**workspace.env(), **OFFLINE, "EDGEPIPE_TOOLCHAINS": str(workspace.root / "tc")}
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(workspace.out)],
        cwd=workspace.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 4, result.stderr
    message = " ".join(result.stderr.split())
    assert "nothing was started" in message and "stage 'tflite'" in message
    assert "toolchain 'onnx2tf' (Python 3.12)" in message, message
    assert "package registry cannot be reached" in message
    assert "edgepipe toolchains --build onnx2tf" in message
    assert not workspace.out.exists() or not any(workspace.out.iterdir())
    assert not (workspace.root / "tc" / declared_toolchain("onnx2tf").folder_name).exists()


def test_plan_names_the_pin_that_changed():
    from edgepipe.key_documents import explain, key_document
    from edgepipe.stages import get_stage

    stage = get_stage("convert-tflite")
    spec = stage.spec_class.model_validate({"type": "convert-tflite", "input": "onnx"})
    newer = spec.model_copy(
        update={"toolchain": ToolchainOverride(requirements=["onnx2tf==2.7.0", "onnx==1.21.0"])}
    )

    def document(this_spec):
        facts = stage.toolchain_for(this_spec).key_facts()
        return key_document(stage, this_spec, ["d" * 64], {}, {}, None, facts)

    old, new = document(spec), document(newer)
    assert "toolchain" not in old["spec"]  # the override is keyed once, resolved
    reasons = explain(old, new, ["onnx"])
    assert "toolchain requirements.onnx2tf 2.6.9 → 2.7.0" in reasons
    assert "toolchain requirements.onnx 1.20.1 → 1.21.0" in reasons
    assert "toolchain requirements.tqdm 4.67.1 → not installed" in reasons
