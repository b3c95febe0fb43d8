"""Runner overhead: wall time of a fully cached `edgepipe run` (goal: well under 0.5 s).

    .venv/bin/python benchmarks/runner_overhead.py [--recipe pipelines/quickstart.yaml] [--runs 10]

Builds the recipe once into a private cache, then times repeated fully cached runs of the
`edgepipe` process (interpreter start-up included) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(recipe: Path, env: dict[str, str], out: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"edgepipe run failed:\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "pipelines" / "quickstart.yaml")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "EDGEPIPE_CACHE": str(Path(scratch) / "cache")}
        out = Path(scratch) / "out"
        cold = _run(args.recipe, env, out)
        warm = [_run(args.recipe, env, out) for _ in range(args.runs)]
        bare = [_time_python(env) for _ in range(args.runs)]
    rows = [
        ("cold run (builds everything)", cold, cold),
        ("fully cached run", min(warm), statistics.median(warm)),
        ("bare `python -c pass` (floor)", min(bare), statistics.median(bare)),
    ]
    print(f"recipe: {args.recipe.name}, {args.runs} runs\n")
    print(f"| {'measurement':<32} | {'min s':>7} | {'median s':>8} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 10}|")
    for name, best, median in rows:
        print(f"| {name:<32} | {best:>7.3f} | {median:>8.3f} |")


def _time_python(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
