"""export-aoti end to end on the model the suite trains (tests/digits.py): torch.export with a
dynamic batch, AOTInductor's .pt2 package, loaded by the `aoti` runtime without the model's
code; it keeps top-1 on held-out digits and passes parity, parity against a broken reference
fails, and it joins the benchmark."""

from __future__ import annotations

import json

import pytest
from conftest import outcomes

pytestmark = pytest.mark.slow
# rows, not precise numbers: short timing windows keep the suite fast
QUICK = "warmup_seconds: 0.2, window_seconds: 0.2, max_seconds: 2"


@pytest.fixture(scope="module")
def aoti_run(tmp_path_factory, digits):
    from conftest import Workspace

    workspace = Workspace(tmp_path_factory.mktemp("aoti"))
    lines = [
        "version: 1",
        "name: digits-aoti",
        "stages:",
        digits.load_stage(),
        digits.broken_load_stage(workspace.root),
        "  aoti: {type: export-aoti, input: model, max_batch: 16}",
        "  parity_aoti: {type: parity, input: aoti}",
        "  wrong_reference: {type: parity, input: aoti, reference: broken}",
        f"  eval_aoti: {{type: evaluate, input: aoti, dataset: {digits.val}}}",
        "  bench: {type: benchmark, inputs: [aoti, parity_aoti], batch_sizes: [1, 4], "
        + QUICK
        + "}",
    ]
    recipe = workspace.recipe("\n".join(lines))
    return workspace, workspace.cli("run", str(recipe), timeout=900)


def test_the_package_keeps_top1_and_passes_parity(aoti_run, digits):
    workspace, result = aoti_run
    stages = outcomes(result.stderr)
    assert stages["aoti"] == "built" and stages["parity_aoti"] == "built", result.stderr
    report = json.loads((workspace.out / "eval_aoti" / "evaluate.json").read_text())
    assert report["images"] == 360 and report["top1_drop"] <= 0.01, report
    meta = json.loads((workspace.out / "aoti" / "artifact.json").read_text())["meta"]
    assert meta["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    assert meta["aoti"]["dynamic_batch"] and meta["aoti"]["compile_seconds"] > 0
    assert (workspace.out / "aoti" / "model.pt2").stat().st_size > 0


def test_parity_against_a_broken_reference_fails(aoti_run):
    _, result = aoti_run
    assert outcomes(result.stderr)["wrong_reference"] == "failed" and result.returncode == 1
    assert "stage 'wrong_reference' failed: parity gate failed" in " ".join(result.stderr.split())


def test_the_package_runs_any_batch_in_the_benchmark(aoti_run):
    workspace, _ = aoti_run
    rows = json.loads((workspace.out / "bench" / "benchmark.json").read_text())["rows"]
    aoti = [row for row in rows if row["runtime"].startswith("aoti")]
    assert sorted(row["batch_size"] for row in aoti) == [1, 4]
    assert all(row["p50_ms"] > 0 and row["parity"] == "passed" for row in aoti), aoti


def test_the_package_is_keyed_by_this_cpu(aoti_run):
    workspace, _ = aoti_run
    document = json.loads((workspace.cache / "index" / "digits-aoti" / "aoti.json").read_text())
    document = document.get("key_document", document)
    assert document["extra"]["cpu"] and document["extra"]["machine"]
