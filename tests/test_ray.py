"""``edgepipe run --executor ray`` on a real two-node Ray cluster on this machine: `ray start
--head` plus a second node joining it, each with its own edgepipe cache, sharing a ``file://``
remote. Stages run in Ray workers of either node; artifacts travel through the remote only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from ray_nodes import SMALL_GRID, LocalRayNodes

from edgepipe.graph import PipelineGraph
from edgepipe.recipe import parse_recipe

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'edgepipe[ray]')")

BUILT = re.compile(r"^\s*built (\S+)\s.*\bon (\S+)", re.M)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = LocalRayNodes(tmp_path_factory.mktemp("ray"))
    try:
        nodes.start("head")
        nodes.start("worker")
        yield nodes
    finally:
        nodes.stop()


def _run(workspace, cluster, recipe, *args, out=None, timeout=600):
    remote = (workspace.root / "remote").as_uri()
    return workspace.cli(
        "run",
        str(recipe),
        "--executor",
        "ray",
        "--address",
        cluster.address,
        "--remote",
        remote,
        *args,
        timeout=timeout,
    )


def _ran_on(stderr: str) -> dict[str, str]:
    return dict(BUILT.findall(stderr))


def test_matrix_runs_each_stage_once_across_nodes_and_locks_as_locally(workspace, cluster):
    recipe = workspace.recipe(SMALL_GRID, "grid.yaml")
    started = time.perf_counter()
    first = _run(workspace, cluster, recipe)
    seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    ran_on = _ran_on(first.stderr)
    stages = yaml.safe_load(recipe.with_suffix(".lock").read_text())["stages"]
    print(f"\nray run: {seconds:.0f} s; node per stage:")
    print("\n".join(f"  {stage:<32} {node}" for stage, node in sorted(ran_on.items())))
    # every stage built exactly once, each on one of the two nodes
    assert sorted(ran_on) == sorted(stages), first.stderr
    assert first.stderr.count(" built ") == len(stages)
    hosts = {node.split("/")[1] for node in ran_on.values()}
    assert 1 <= len(hosts) <= 2
    # the worker node's cache holds what it built: nothing came through the driver's disk
    assert any((cluster.caches["worker"] / "ac").rglob("*.json")) or len(hosts) == 1

    # a second run is fully cached (planned again, not answered by the no-op record)
    env = {"EDGEPIPE_NO_FAST_PATH": "1"}
    os.environ.update(env)
    try:
        second = _run(workspace, cluster, recipe)
    finally:
        os.environ.pop("EDGEPIPE_NO_FAST_PATH")
    assert second.returncode == 0, second.stderr
    assert "done: 0 built" in second.stderr, second.stderr

    # the same recipe, locally, into a fresh cache, with all cores where Ray gave each
    # one-CPU task one thread: the lock holds nothing that depends on the thread count
    local = workspace.root / "local"
    local.mkdir()
    shutil.copy(recipe, local / recipe.name)
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(local / recipe.name), "--jobs", "2"],
        cwd=local,
        env=workspace.env() | {"EDGEPIPE_CACHE": str(local / "cache")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    # the lock holds what a rebuild reproduces (no timings; TorchScript saved without the
    # tracer's call stack): the same bytes from either executor
    assert (local / "grid.lock").read_text() == recipe.with_suffix(".lock").read_text()
    print(f"lock: identical to a local run's ({len(stages)} stages)")


def test_a_label_no_node_has_fails_before_any_stage(workspace, cluster):
    recipe = workspace.recipe(
        """
        version: 1
        name: needs-a10g
        stages:
          model: {type: load, name: test_resnet}
          onnx:
            type: export
            input: model
            resources: {node: {gpu_model: A10G}}
        """
    )
    result = _run(workspace, cluster, recipe)
    assert result.returncode != 0
    assert "no node of the Ray cluster has label gpu_model=A10G" in result.stderr, result.stderr
    assert "stage 'onnx'" in result.stderr and " built " not in result.stderr
    assert not any((workspace.root / "remote").rglob("*.json"))  # nothing ran anywhere


def test_ray_needs_a_remote(workspace):
    recipe = workspace.recipe("version: 1\nname: r\nstages:\n  m: {type: load, name: test_vit}\n")
    result = workspace.cli("run", str(recipe), "--executor", "ray")
    assert result.returncode != 0 and "--executor ray needs a remote cache" in result.stderr


def test_a_node_killed_mid_stage_fails_the_stage_and_a_rerun_completes(workspace, cluster):
    """Runs last: it kills the worker node (pytest keeps the file's order)."""
    recipe = workspace.recipe(
        """
        version: 1
        name: lost-node
        stages:
          model: {type: load, name: test_resnet}
          bench:
            type: benchmark
            inputs: [model]
            resources: {node: {role: worker}}
            batch_sizes: [1]
            warmup_seconds: 30
            window_seconds: 0.2
            max_seconds: 2
        """
    )
    remote = workspace.root / "remote"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgepipe",
            "run",
            str(recipe),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--remote",
            remote.as_uri(),
            "--out",
            str(workspace.out),
        ],
        cwd=workspace.root,
        env=workspace.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    workdirs = cluster.caches["worker"] / "tmp"
    while not any(workdirs.glob("*ray-bench*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(workdirs.glob("*ray-bench*")), "the benchmark never started on the worker"
    time.sleep(2)
    cluster.kill("worker")
    _, stderr = run.communicate(timeout=300)
    print("\n" + stderr)
    assert run.returncode != 0
    assert "stage 'bench' failed" in stderr and "Ray task was lost" in stderr
    for cache in (workspace.cache, cluster.caches["head"]):
        verify = workspace.cli("cache", "verify", "--cache", str(cache))
        assert verify.returncode == 0, verify.stdout + verify.stderr
    remote_check = workspace.cli("cache", "verify", "--remote", remote.as_uri())
    assert remote_check.returncode == 0, remote_check.stdout + remote_check.stderr
    # the worker is gone: the rerun finds no node labelled role=worker, names it, builds nothing
    rerun = _run(workspace, cluster, recipe)
    assert rerun.returncode != 0 and "label role=worker" in rerun.stderr, rerun.stderr
    # without the pin, the rerun completes on the head node; the load comes from the cache
    recipe.write_text(recipe.read_text().replace("resources: {node: {role: worker}}", ""))
    recipe.write_text(recipe.read_text().replace("warmup_seconds: 30", "warmup_seconds: 0.1"))
    done = _run(workspace, cluster, recipe)
    assert done.returncode == 0, done.stderr
    assert json.loads((workspace.out / "bench" / "benchmark.json").read_text())


def test_a_node_with_other_tool_versions_refuses_to_build_under_the_drivers_key(workspace, cluster):
    """A node whose onnxsim is another version (its metadata says 0.0.1) must not store a
    simplified model under a key that names the driver's onnxsim."""
    shadow = workspace.root / "shadow"
    info = shadow / "onnxsim-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxsim\nVersion: 0.0.1\n")
    cluster.python_paths["stale"] = str(shadow)
    cluster.start("stale")
    recipe = workspace.recipe(
        """
        version: 1
        name: stale-node
        stages:
          model: {type: load, name: test_resnet}
          onnx: {type: export, input: model, exporter: torchscript}
          simple: {type: simplify, input: onnx, resources: {node: {role: stale}}}
        """
    )
    result = _run(workspace, cluster, recipe)
    print("\n" + result.stderr)
    assert result.returncode == 1
    line = next(ln for ln in result.stderr.splitlines() if "stage 'simple' failed" in ln)
    assert "this node does not match the key the driver planned" in line and "onnxsim" in line
    assert "0.0.1" in line, line
    assert not (workspace.out / "simple").exists()


def test_without_ray_the_executor_is_a_preflight_error_with_the_fix(monkeypatch, tmp_path):
    import importlib.util

    from edgepipe.cache import Cache
    from edgepipe.cache.remote import RemoteCache
    from edgepipe.cli_common import Executor, open_cluster
    from edgepipe.errors import PreflightError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    cache = Cache(tmp_path / "cache")
    remote = RemoteCache((tmp_path / "remote").as_uri(), cache)
    graph = PipelineGraph(parse_recipe(SMALL_GRID))
    with pytest.raises(PreflightError, match=r"pip install 'edgepipe\[ray\]'"):
        open_cluster(Executor.ray, None, remote, graph, cache, in_process=False)
    assert open_cluster(Executor.local, None, remote, graph, cache, in_process=False) is None
