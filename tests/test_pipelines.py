"""The shipped CPU recipes run offline, and their fully cached reruns import no ML library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

pytestmark = pytest.mark.slow

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
HEAVY = {"torch", "timm", "onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "numpy"}


def heavy_modules_of_cached_run(workspace, recipe: Path) -> list[str]:
    probe = (
        "import sys\n"
        "from edgepipe.cli import app\n"
        f"app(['run', {str(recipe)!r}, '--out', {str(workspace.out)!r}, '--no-lock'],"
        " standalone_mode=False)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=workspace.env(),
                            capture_output=True, text=True, cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    assert " built " not in result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_composed_parity_recipe(workspace):
    recipe = PIPELINES / "composed_parity.yaml"
    result = workspace.cli("run", str(recipe), "--no-lock")
    assert result.returncode == 0, result.stderr
    for stage in ("parity_onnx", "parity_e2e"):
        assert json.loads((workspace.out / stage / "parity.json").read_text())["passed"]
    # the dynamo export carries no absolute source paths: its bytes do not depend on the checkout
    exported = onnx.load(str(workspace.out / "onnx" / "model.onnx"), load_external_data=False)
    keys = {p.key for node in exported.graph.node for p in node.metadata_props}
    assert "namespace" in keys and "pkg.torch.onnx.stack_trace" not in keys
    assert heavy_modules_of_cached_run(workspace, recipe) == []
