"""The lockfile holds what a rebuild reproduces; measured numbers go to the run's metrics.json,
which ``edgepipe metrics diff`` compares."""

from __future__ import annotations

import json
import re
import shutil

from conftest import QUICK_TIMING, Workspace

from edgepipe.metrics import diff_rows

RECIPE = f"""
version: 1
name: measured
stages:
  model: {{type: load, name: test_resnet}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  check: {{type: parity, input: onnx}}
  ts: {{type: export-torchscript, input: model}}
  ts_check: {{type: parity, input: ts, reference: model}}
  quick: {{type: benchmark, inputs: [onnx], batch_sizes: [1], {QUICK_TIMING}}}
  bench: {{type: benchmark, inputs: [onnx, check], batch_sizes: [1], {QUICK_TIMING}}}
"""


def test_a_remeasured_benchmark_leaves_the_lock_alone_and_metrics_diff_shows_it(workspace):
    recipe = workspace.recipe(RECIPE, "measured.yaml")
    first = workspace.cli("run", str(recipe))
    assert first.returncode == 0, first.stderr
    lock = recipe.with_suffix(".lock").read_text()
    assert "p50" not in lock and "worst_cosine" not in lock  # no measured number in the lock
    assert "reproducible: false" in lock and "passed: true" in lock
    metrics = json.loads((workspace.out / "metrics.json").read_text())
    assert metrics["machine"]["cpu"] and metrics["stages"]["check"]["worst_cosine"] > 0.99
    assert metrics["stages"]["bench"]["onnx@1"]["p50_ms"] > 0
    baseline = workspace.root / "baseline.json"
    shutil.copy(workspace.out / "metrics.json", baseline)

    again = workspace.cli("run", str(recipe), "--force", "bench")
    assert again.returncode == 0, again.stderr
    assert recipe.with_suffix(".lock").read_text() == lock  # measured anew, same lock
    assert workspace.cli("check", str(recipe)).returncode == 0
    out = ["--out", str(workspace.out)]
    diff = workspace.cli("metrics", "diff", str(recipe), "--against", str(baseline), *out)
    assert diff.returncode == 0, diff.stderr
    assert "onnx@1" in diff.stdout and "p50_ms" in diff.stdout, diff.stdout
    missing = workspace.cli("metrics", "diff", str(recipe), "--against", "no-such-ref", *out)
    assert missing.returncode == 2 and "no git ref holding measured.metrics.json" in missing.stderr

    # the baseline gate reads a metrics file: this stage's rows, on the same machine/threads
    fast = json.loads(baseline.read_text())
    for row in fast["stages"]["bench"].values():
        if isinstance(row, dict):
            row["p50_ms"] /= 100
    (workspace.root / "fast.json").write_text(json.dumps(fast))
    gated = workspace.recipe(
        RECIPE.replace("inputs: [onnx, check],", "inputs: [onnx, check], baseline: fast.json,"),
        "measured.yaml",
    )
    slower = workspace.cli("run", str(gated))
    assert slower.returncode == 1, slower.stderr
    assert "stage 'bench' failed: slower than the baseline" in slower.stderr
    assert "onnx (batch 1): p50" in slower.stderr
    # ... or a committed benchmark.json; one measured on other hardware is not compared
    report = json.loads((workspace.out / "bench" / "benchmark.json").read_text())
    for row in report["rows"]:
        row["p50_ms"] /= 100
    (workspace.root / "fast.json").write_text(json.dumps(report))
    assert "slower than the baseline" in workspace.cli("run", str(gated)).stderr
    report["environment"]["cpu"] = "Some Other CPU"
    (workspace.root / "fast.json").write_text(json.dumps(report))
    other = workspace.cli("run", str(gated))
    assert other.returncode == 0 and "measured on other hardware" in other.stderr, other.stderr

    # from an empty cache, with two jobs and one benchmark thread instead of all cores: the same
    # lock, byte for byte (TorchScript included); metrics diff shows the threads and timings
    fresh = Workspace(workspace.root / "fresh")
    fresh.root.mkdir()
    one_thread = RECIPE.replace("batch_sizes: [1],", "batch_sizes: [1], threads: 1,")
    rebuilt = fresh.recipe(one_thread, "measured.yaml")
    assert fresh.cli("run", str(rebuilt), "--jobs", "2").returncode == 0
    assert rebuilt.with_suffix(".lock").read_text() == lock
    moved = fresh.cli(
        "metrics", "diff", str(rebuilt), "--against", str(baseline), "--out", str(fresh.out)
    )
    assert moved.returncode == 0, moved.stderr
    assert re.search(r"quick\s.*threads\s.*\b2\b.*\b1\b", moved.stdout), moved.stdout


def test_diff_flags_timings_and_metrics_by_their_own_tolerance():
    before = {"stages": {"b": {"x@1": {"p50_ms": 10.0, "speedup": 2.0}}, "p": {"kl": 0.010}}}
    after = {"stages": {"b": {"x@1": {"p50_ms": 10.5, "speedup": 1.5}}, "p": {"kl": 0.011}}}
    rows = {(r[0], r[1]): r[4:] for r in diff_rows(before, after, 0.10, 0.001)}
    assert rows[("b", "x@1 p50_ms")] == ["+5.0%", "within tolerance"]
    assert rows[("b", "x@1 speedup")] == ["-25.0%", "beyond tolerance"]
    assert rows[("p", "kl")] == ["+10.0%", "beyond tolerance"]
    assert diff_rows(before, before, 0.1, 0.001) == []
