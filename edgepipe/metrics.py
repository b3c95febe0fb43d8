"""The metrics file: what a run measured, kept apart from the lockfile (which holds only what a
rebuild reproduces), as DVC keeps metrics apart from ``dvc.lock``.

A full run writes ``<out>/metrics.json``: per stage its measured numbers
(``Stage.measurements``: benchmark latencies, throughputs and speedups, parity and evaluate
metrics), with the machine they were measured on. CI uploads it; a team that wants a baseline
in review commits one as ``<recipe>.metrics.json`` beside the recipe (from the machine its
numbers should be compared on). ``edgepipe metrics diff`` shows what moved between two.
"""

from __future__ import annotations

__all__ = ["baseline_path", "diff_rows", "read_metrics", "recipe_metrics", "write_metrics"]

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from edgepipe.env import machine_fingerprint
from edgepipe.errors import UsageError

log = logging.getLogger(__name__)

METRICS_VERSION = 1
METRICS_FILE = "metrics.json"
TIMINGS = ("_ms", "throughput_per_s", "speedup")
"""Metric names (suffixes) that are timings: compared with the timing tolerance."""


def recipe_metrics(graph, out_dir: Path) -> dict[str, Any]:
    """Every stage's measurements, read from its output folder."""
    stages = {}
    for stage_id in graph.order():
        folder = out_dir / stage_id
        files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        try:
            measured = graph.stage(stage_id).measurements(files) if files else {}
        except (KeyError, TypeError, ValueError, OSError) as exc:
            # a report of an older layout must not fail a run whose every stage succeeded
            log.warning("%s: its measurements could not be read (%s)", stage_id, exc)
            continue
        if measured:
            stages[stage_id] = measured
    return {
        "metrics_version": METRICS_VERSION,
        "recipe": graph.recipe.name,
        "machine": machine_fingerprint(),
        "stages": stages,
    }


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = out_dir / METRICS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def baseline_path(recipe_path: Path) -> Path:
    """Where a committed baseline lives: ``<recipe>.metrics.json`` beside the recipe."""
    return recipe_path.with_suffix(".metrics.json")


def read_metrics(source: str | Path, recipe_path: Path) -> dict[str, Any]:
    """Metrics from a file, or from the committed baseline at a git ref (``HEAD~1``, ``main``).

    Raises:
        UsageError: Neither a readable metrics file nor a ref holding the baseline.
    """
    path = Path(source)
    if path.is_file():
        text = path.read_text()
    else:
        baseline = baseline_path(recipe_path).resolve()
        try:
            top = subprocess.run(
                ["git", "rev-parse", "--show-toplevel"],
                cwd=baseline.parent,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            text = subprocess.run(
                ["git", "show", f"{source}:{baseline.relative_to(top).as_posix()}"],
                cwd=top,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except (subprocess.CalledProcessError, OSError, ValueError):
            raise UsageError(
                f"--against {source}: not a metrics file, and no git ref holding "
                f"{baseline.name} (commit a run's metrics.json there to diff against a ref)"
            ) from None
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not a metrics file ({exc})") from None
    if not isinstance(metrics, dict) or metrics.get("metrics_version") != METRICS_VERSION:
        raise UsageError(f"{source}: not an edgepipe metrics file of this version")
    return metrics


def _flatten(stages: dict[str, Any]) -> dict[tuple[str, str], Any]:
    flat = {}
    for stage_id, measured in stages.items():
        for name, value in measured.items():
            if isinstance(value, dict):  # a benchmark row: label@batch → its numbers
                flat.update({(stage_id, f"{name} {k}"): v for k, v in value.items()})
            else:
                flat[(stage_id, name)] = value
    return flat


def diff_rows(
    before: dict[str, Any], after: dict[str, Any], timing_tolerance: float, tolerance: float
) -> list[list[str]]:
    """[stage, metric, before, after, change, verdict] for every metric that moved; timings
    beyond ``timing_tolerance`` (relative) and others beyond ``tolerance`` are flagged."""
    old, new = _flatten(before.get("stages", {})), _flatten(after.get("stages", {}))
    rows = []
    for stage_id, name in sorted(old.keys() | new.keys()):
        a, b = old.get((stage_id, name)), new.get((stage_id, name))
        if a == b:
            continue
        limit = timing_tolerance if name.endswith(TIMINGS) else tolerance
        if isinstance(a, int | float) and isinstance(b, int | float) and a:
            change = (b - a) / abs(a)
            verdict = "beyond tolerance" if abs(change) > limit else "within tolerance"
            rows.append([stage_id, name, f"{a:g}", f"{b:g}", f"{change:+.1%}", verdict])
        else:
            rows.append([stage_id, name, str(a), str(b), "", "changed"])
    return rows
