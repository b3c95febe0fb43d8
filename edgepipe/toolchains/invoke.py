"""Run a worker script in a toolchain's environment as a subprocess of the stage's process.

Artifacts pass as files, the request and the result as JSON files. What the worker prints goes
into the stage's log line by line (progress bars off). The subprocess stays in the stage's
process group and dies with it, so stopping a run stops it too; its peak memory counts in the
stage's (``RUSAGE_CHILDREN``, see edgepipe.executor).
"""

from __future__ import annotations

__all__ = ["WORKERS", "run_worker"]

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError
from edgepipe.processes import die_with_parent
from edgepipe.toolchains.environments import isolated_environ

WORKERS = Path(__file__).parent / "workers"


def run_worker(
    python: Path, worker: str, request: dict[str, Any], work_dir: Path, log: logging.Logger
) -> dict[str, Any]:
    """Run ``workers/<worker>.py`` with ``python``; return its result.

    Raises:
        StageError: The worker reported an error (its traceback goes to the log) or died.
    """
    request_file, result_file = (
        work_dir / f"{worker}.request.json",
        work_dir / f"{worker}.result.json",
    )
    request_file.write_text(json.dumps(request))
    result_file.unlink(missing_ok=True)
    env = isolated_environ(TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    command = [str(python), str(WORKERS / f"{worker}.py"), str(request_file), str(result_file)]
    log.info("running %s in toolchain %s", worker, python.parent.parent.name)
    tail: list[str] = []
    with subprocess.Popen(
        command,
        cwd=work_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            for line in raw.decode("utf-8", errors="replace").replace("\r", "\n").splitlines():
                if line.strip():
                    log.info("%s: %s", worker, line.rstrip())
                    tail = [*tail[-19:], line.rstrip()]
    return _result(worker, result_file, process.returncode, tail, log)


def _result(
    worker: str, result_file: Path, code: int, tail: list[str], log: logging.Logger
) -> dict[str, Any]:
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = tail[-1] if tail else "no output"
        raise StageError(f"{worker} {how} without a result (last output: {last})") from None
    if not result.get("ok"):
        log.info("%s traceback:\n%s", worker, result.get("traceback", ""))
        raise StageError(f"{worker}: {result.get('error', 'failed without a message')}")
    return result
