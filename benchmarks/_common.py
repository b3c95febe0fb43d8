"""Helpers shared by the project benchmarks: run the real CLI on a recipe in a scratch cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The console script, as users run it (`make run`); `python -m edgepipe` if it is missing.
_SCRIPT = Path(sys.executable).parent / "edgepipe"
_COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edgepipe"]


def edgepipe(
    *args: str, cache: Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Run ``edgepipe ARGS`` (``env``: extra environment variables); returns (wall seconds,
    stdout)."""
    elapsed, result = edgepipe_run(*args, cache=cache, cwd=cwd, check=check, env=env)
    return elapsed, result.stdout


def edgepipe_run(
    *args: str, cache: Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    """As :func:`edgepipe`, with the whole completed process (its stderr: the run's lines)."""
    env = {**os.environ, "EDGEPIPE_CACHE": str(cache), **(env or {})}
    started = time.perf_counter()
    result = subprocess.run([*_COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if check and result.returncode != 0:
        sys.exit(f"edgepipe {' '.join(args)} failed:\n{result.stderr}")
    return elapsed, result


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
