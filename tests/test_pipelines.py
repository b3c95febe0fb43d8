"""The shipped CPU recipes run offline, and their fully cached reruns import no ML library."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

pytestmark = pytest.mark.slow

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


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
    stderr, heavy = workspace.cached_run(recipe)
    assert " built " not in stderr
    assert heavy == []
