"""Run independent stages at the same time (``--jobs N``) without overcommitting the machine.

A stage may start when its inputs are done, a job slot is free, no other GPU stage runs if it
needs the GPU, the memory hints of running stages leave room for it, and no stage that times
things (a benchmark) runs or would run beside it. Preparing a stage
(hashing, cache lookup) stays on the calling thread; only the build runs in a worker thread,
which itself waits on the stage's child process.

Readiness is per stage, not per generation (networkx's ``topological_generations``): a stage
starts once its own inputs are done. Running generation by generation would leave job slots idle
behind the slowest stage of each generation, and the GPU and memory checks would still have to
split a generation. Among ready stages that fit, the earliest in ``order`` (the graph's stable
topological order) starts first.
"""

from __future__ import annotations

__all__ = ["Demand", "memory_budget_gb", "schedule"]

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Demand:
    """What a running stage holds: the GPU, an estimate of its peak memory, and whether it must
    have the machine to itself (a benchmark: a stage beside it would be in its timings)."""

    gpu: bool = False
    memory_gb: float = 0.0
    alone: bool = False


def schedule(
    order: list[str],
    inputs: Callable[[str], list[str]],
    prepare: Callable[[str], Any],
    execute: Callable[[Any], Any],
    demand: Callable[[str], Demand],
    jobs: int,
    memory_budget_gb: float,
) -> list[Any]:
    """Run stages in ``order`` respecting dependencies; returns results in ``order``.

    ``prepare(stage)`` returns either ``(True, plan)`` to run ``execute(plan)`` in a worker, or
    ``(False, result)`` for a stage settled without work (e.g. skipped because an input failed).
    """
    results: dict[str, Any] = {}
    waiting = list(order)
    running: dict[Future, tuple[str, Demand]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while waiting or running:
            for stage_id in list(waiting):
                if any(up not in results for up in inputs(stage_id)):
                    continue
                need = demand(stage_id)
                if not _fits(need, running, jobs, memory_budget_gb):
                    continue
                waiting.remove(stage_id)
                runnable, prepared = prepare(stage_id)
                if runnable:
                    running[pool.submit(execute, prepared)] = (stage_id, need)
                else:
                    results[stage_id] = prepared
            if running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    stage_id, _ = running.pop(future)
                    results[stage_id] = future.result()
    return [results[stage_id] for stage_id in order]


def _fits(need: Demand, running: dict, jobs: int, budget: float) -> bool:
    if not running:
        return True  # never starve: a stage bigger than the budget runs alone
    if len(running) >= jobs:
        return False
    held = [d for _, d in running.values()]
    if need.alone or any(d.alone for d in held):
        return False
    if need.gpu and any(d.gpu for d in held):
        return False
    return sum(d.memory_gb for d in held) + need.memory_gb <= budget


def memory_budget_gb() -> float:
    """80 % of physical memory: what stages running together may plan to use."""
    try:
        return 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("inf")
