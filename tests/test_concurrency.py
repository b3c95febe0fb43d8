"""Parallel branches (--jobs) and concurrent runs sharing one cache."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from conftest import outcomes

from edgepipe.scheduler import Demand, schedule

TWO_BRANCHES = """
version: 1
name: branches
stages:
  a: {type: load, name: test_resnet}
  b: {type: load, name: test_convnext}
  a_onnx: {type: export, input: a, exporter: torchscript}
  b_onnx: {type: export, input: b, exporter: torchscript}
  a_simple: {type: simplify, input: a_onnx}
  b_simple: {type: simplify, input: b_onnx}
"""


def _run_schedule(demands: dict[str, Demand], jobs: int, budget: float = 100.0):
    active, peak, overlaps, lock = set(), [0], [], threading.Lock()

    def execute(stage):
        with lock:
            active.add(stage)
            peak[0] = max(peak[0], len(active))
            overlaps.append(set(active))
        time.sleep(0.05)
        with lock:
            active.discard(stage)
        return stage

    order = list(demands)
    results = schedule(
        order,
        inputs=lambda s: [],
        prepare=lambda s: (True, s),
        execute=execute,
        demand=demands.__getitem__,
        jobs=jobs,
        memory_budget_gb=budget,
    )
    return results, peak[0], overlaps


def test_schedule_runs_independent_stages_together():
    results, peak, _ = _run_schedule({s: Demand() for s in "abcd"}, jobs=2)
    assert results == list("abcd") and peak == 2


def test_two_gpu_stages_never_overlap_and_memory_is_respected():
    demands = {
        "g1": Demand(gpu=True),
        "g2": Demand(gpu=True),
        "m1": Demand(memory_gb=8),
        "m2": Demand(memory_gb=8),
    }
    _, _, overlaps = _run_schedule(demands, jobs=4, budget=12)
    for group in overlaps:
        assert not {"g1", "g2"} <= group
        assert not {"m1", "m2"} <= group


def test_a_benchmark_runs_alone():
    """Nothing runs beside a stage that times things: it would be in its timings."""
    demands = {"a": Demand(), "bench": Demand(alone=True), "b": Demand(), "c": Demand()}
    results, peak, overlaps = _run_schedule(demands, jobs=4)
    assert results == ["a", "bench", "b", "c"] and peak == 3  # b and c still run together
    assert all(group == {"bench"} for group in overlaps if "bench" in group)


def test_dependencies_are_waited_for():
    finished = []

    def execute(stage):
        time.sleep(0.02 if stage == "up" else 0)
        finished.append(stage)
        return stage

    schedule(
        ["up", "down", "other"],
        inputs=lambda s: ["up"] if s == "down" else [],
        prepare=lambda s: (True, s),
        execute=execute,
        demand=lambda s: Demand(),
        jobs=3,
        memory_budget_gb=10,
    )
    assert finished.index("up") < finished.index("down")


@pytest.mark.slow
def test_jobs_gives_identical_artifacts(workspace, tmp_path):
    recipe = workspace.recipe(TWO_BRANCHES)
    parallel = workspace.cli("run", str(recipe), "--jobs", "2")
    assert parallel.returncode == 0, parallel.stderr
    parallel_bytes = {
        s: (workspace.out / s / "model.onnx").read_bytes() for s in ("a_simple", "b_simple")
    }
    workspace.cache, workspace.out = tmp_path / "serial-cache", tmp_path / "serial-out"
    assert workspace.cli("run", str(recipe), "--jobs", "1").returncode == 0
    for stage, data in parallel_bytes.items():
        assert (workspace.out / stage / "model.onnx").read_bytes() == data


@pytest.mark.slow
def test_concurrent_runs_build_each_action_once(workspace, tmp_path):
    recipe = workspace.recipe(TWO_BRANCHES)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgepipe",
                "run",
                str(recipe),
                "--out",
                str(tmp_path / f"out{i}"),
                "--no-lock",
            ],
            cwd=workspace.root,
            env=workspace.env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    built = [stage for err in errors for stage, how in outcomes(err).items() if how == "built"]
    assert sorted(built) == sorted(["a", "b", "a_onnx", "b_onnx", "a_simple", "b_simple"])
    verify = workspace.cli("cache", "verify")
    assert verify.returncode == 0, verify.stdout
    for i in range(2):
        assert (tmp_path / f"out{i}" / "b_simple" / "model.onnx").is_file()


def test_a_hit_evicted_before_it_is_materialised_is_built_again(tmp_path):
    from edgepipe.cache import Cache
    from edgepipe.graph import PipelineGraph
    from edgepipe.recipe import load_recipe
    from edgepipe.runner import Runner

    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nname: evicted\nstages:\n  m: {type: load, name: test_resnet}\n")
    graph, cache, out = (
        PipelineGraph(load_recipe(recipe)),
        Cache(tmp_path / "cache"),
        tmp_path / "o",
    )
    assert Runner(graph, cache, out, isolate=False).run(["m"]).stages[0].outcome == "built"

    runner = Runner(graph, cache, out, isolate=False)
    materialize, evicted = runner._materialize, []

    def gc_strikes_first(stage_id, digest):  # a concurrent gc removes the hit's objects
        if not evicted:
            evicted.append(digest)
            for entry in cache.read_manifest(digest):
                cache.object_path(entry.digest).unlink()
        materialize(stage_id, digest)

    runner._materialize = gc_strikes_first
    (result,) = runner.run(["m"]).stages
    assert evicted and result.outcome == "built", result.message
    assert (out / "m" / "artifact.json").is_file()
