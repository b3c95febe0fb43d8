"""Ctrl-C, SIGTERM and kill -9 stop the stage's whole process group and lose nothing.

Each test starts a real run whose `load` stage sits in a slow model factory, waits until the
stage's process exists, and signals the run the way a terminal or a CI runner does.
benchmarks/kill_harness.py does the same at random moments, many times over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepipe.cache import Cache
from edgepipe.cache._layout import tmp_name

pytestmark = pytest.mark.slow

SLOW_FACTORY = """
import time

import torch


def build():
    time.sleep(120)  # long enough to be stopped in the middle
    return torch.nn.Conv2d(3, 4, 3)
"""

RECIPE = """
version: 1
name: stoppable
stages:
  slow:
    type: load
    source: callable
    factory: slow:build
    data_config: {input_size: [3, 16, 16]}
"""


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process, zombies excluded."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z":
            table[int(entry)] = (int(ppid), int(pgrp))
    return table


def descendants(root: int) -> dict[int, int]:
    """pid -> process group of every live process below ``root``."""
    table = process_table()
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - set(found)
        found.update({pid: table[pid][1] for pid in frontier})
    return found


def start_run(workspace, recipe: Path) -> tuple[subprocess.Popen, dict[int, int]]:
    """Start `edgepipe run` in its own session; return it once its stage process runs."""
    (workspace.root / "slow.py").write_text(SLOW_FACTORY)
    run = subprocess.Popen(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(workspace.out)],
        cwd=workspace.root,
        env=workspace.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        below = descendants(run.pid)
        # The stage child leads its own process group (the forkserver shares the run's), and
        # its work directory exists: not the preflight child, which also leads a group.
        if any(pid == group for pid, group in below.items()) and tmp_entries(workspace):
            return run, below
        time.sleep(0.1)
    run.kill()
    pytest.fail(f"the stage never started: {run.communicate()[1]}")


def gone_within(pids, seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = set(pids) & set(process_table())
        if not left:
            return set()
        time.sleep(0.1)
    left = set(pids) & set(process_table())
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def tmp_entries(workspace) -> list[str]:
    tmp = workspace.cache / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_stage_says_so_and_cleans_up(workspace, sig, code):
    run, below = start_run(workspace, workspace.recipe(RECIPE))
    os.kill(run.pid, sig)  # the edgepipe process only, as `kill` or a CI runner does
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"interrupted ({signal.Signals(sig).name}): stopped 'slow'" in stderr
    assert "finished stages stay cached" in stderr
    assert "failed" not in stderr
    assert gone_within(below, 5) == set()
    assert tmp_entries(workspace) == []


def test_ctrl_c_at_the_terminal_reaches_the_whole_group_without_tracebacks(workspace):
    run, below = start_run(workspace, workspace.recipe(RECIPE))
    os.killpg(run.pid, signal.SIGINT)  # what the terminal does: every process in the group
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert gone_within(below, 5) == set()


def test_kill_9_of_the_run_takes_its_stage_down_and_the_next_run_reclaims_tmp(workspace):
    recipe = workspace.recipe(RECIPE)
    run, below = start_run(workspace, recipe)
    os.kill(run.pid, signal.SIGKILL)  # nothing can clean up in the killed process itself
    run.communicate(timeout=30)
    assert gone_within(below, 5) == set()
    left = tmp_entries(workspace)
    assert left, "the killed run's work directory should be there to reclaim"
    (workspace.root / "slow.py").write_text(SLOW_FACTORY.replace("time.sleep(120)", "pass"))
    rerun = workspace.cli("run", str(recipe))
    assert rerun.returncode == 0, rerun.stderr
    assert tmp_entries(workspace) == []


def test_gc_reclaims_a_dead_processs_tmp_at_once_and_keeps_live_and_foreign_ones(tmp_path):
    cache = Cache(tmp_path / "cache")
    cache.tmp_dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    mine = tmp_name("work")  # this process: alive
    killed = mine.replace(f"-{os.getpid()}@", f"-{dead_pid}@")
    foreign = f"work-{dead_pid}@00000000-{'ab' * 8}"  # another host or container: unknowable
    for name in (mine, killed, foreign):
        (cache.tmp_dir / name).mkdir()
        (cache.tmp_dir / name / "partial.onnx").write_bytes(b"x" * 100)
    assert cache.reclaim_abandoned() == 1
    assert sorted(os.listdir(cache.tmp_dir)) == sorted([mine, foreign])
    assert cache.gc()["tmp_removed"] == 0  # young, and not provably abandoned: kept
