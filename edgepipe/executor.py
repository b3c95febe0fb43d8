"""Run one stage in a child process: its memory is returned when it ends, a crash or an
out-of-memory kill takes only the child, and the child's peak RSS is the stage's own.

Children fork from a *forkserver* that has already imported the heavy libraries the run
needs (torch, onnx…), so isolation costs a fork, not a second import of torch per stage.
"""

from __future__ import annotations

__all__ = [
    "StageOutcome",
    "preflight_isolated",
    "preload_for",
    "run_in_process",
    "run_isolated",
    "start_server",
]

import importlib.util
import multiprocessing
import os
import resource
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError, StageError, StageInterrupted, summarize_exception
from edgepipe.processes import (
    deferred,
    enter_stage_process,
    is_stopping,
    kill_stage,
    sigint_ignored,
    track,
    untrack,
)

# Only libraries whose import starts no Python thread: forking while another thread holds a
# module's import lock deadlocks the child on that import. openvino and nncf start threads
# (telemetry) at import, so they are imported by each stage instead (they load in ~0.2 s).
_HEAVY = ("torch", "timm", "onnx")
# The forkserver reaps with waitpid(-1) and warns about pids it did not fork itself (a stage's
# own subprocesses): harmless, and noise on the user's terminal.
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
_MAX_LOG_LINES = 5000


@dataclass
class StageOutcome:
    meta: dict[str, Any]
    log_lines: list[str]
    peak_rss_bytes: int


def preload_for(distributions: set[str]) -> list[str]:
    """Heavy modules worth importing once in the forkserver, of those the stages will use."""
    return [m for m in _HEAVY if m in distributions and importlib.util.find_spec(m) is not None]


_context: Any = None


def _mp_context(preload: list[str]):
    global _context
    if _context is None:
        methods = multiprocessing.get_all_start_methods()
        _context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            # "__main__": a child re-imports the parent's main script unless the server already
            # has (the `edgepipe` console script pulls in the whole CLI: ~50 ms per stage);
            # under `python -m edgepipe` there is no script and nothing is re-imported.
            _context.set_forkserver_preload(
                [
                    "__main__",
                    "edgepipe.executor",
                    "edgepipe.stages",
                    *preload,
                    "edgepipe._forkserver_ready",
                ]
            )
    return _context


def start_server(preload: list[str]) -> None:
    """Start the forkserver now, so its imports overlap with the parent's preflight."""
    context = _mp_context(preload)
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with sigint_ignored():
            forkserver.ensure_running()


def run_isolated(payload: dict[str, Any], preload: list[str], error_log: Path) -> StageOutcome:
    """Run ``payload`` (stage type, spec, ids, paths, inputs) in a child; raise StageError on
    failure, writing a library traceback to ``error_log``, or StageInterrupted if the run is
    being stopped (see edgepipe.processes)."""
    message, exitcode = _in_child(_child_main, (payload,), payload["stage_id"], preload)
    if message is None:
        raise StageError(_death_message(exitcode))
    return _outcome(message, error_log)


def preflight_isolated(
    checks: list[dict[str, Any]], recipe_dir: Path, preload: list[str]
) -> list[list[str]]:
    """Run stages' preflight checks in one forked child, where torch/timm are already imported
    (checking a timm name or hub weights would otherwise import timm in this process too)."""
    result, exitcode = _in_child(_preflight_main, (checks, str(recipe_dir)), "", preload)
    if result is None:
        raise StageError(f"the preflight process died ({_death_message(exitcode)})")
    if isinstance(result, str):
        raise StageError(f"preflight failed: {result}")
    return result


def _in_child(target, args: tuple, stage_id: str, preload: list[str]) -> tuple[Any, int | None]:
    """Run ``target(sender, *args)`` in a forked child that a signal can stop; return what it
    sent (None if it died first) and its exit code. ``stage_id`` is "" for the preflight."""
    context = _mp_context(preload)
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=target, args=(sender, *args), daemon=True)
    try:
        with deferred():  # a signal now would leave the child running, untracked
            child.start()
            track(child.pid, stage_id)
    except (OSError, EOFError):  # the forkserver is gone: killed with the run's group?
        if is_stopping():
            raise StageInterrupted(f"stage '{stage_id}' was stopped") from None
        raise
    sender.close()
    try:
        message = receiver.recv() if receiver.poll(None) else None
    except EOFError:
        message = None
    except BaseException:  # never leave the stage running behind an unexpected error
        kill_stage(child.pid)
        raise
    finally:
        child.join()
        untrack(child.pid)
    if message is None and is_stopping():
        raise StageInterrupted(f"stage '{stage_id}' was stopped" if stage_id else "stopped")
    return message, child.exitcode


def _preflight_main(sender, checks: list[dict[str, Any]], recipe_dir: str) -> None:
    from edgepipe.stages.base import get_stage

    enter_stage_process()
    try:
        problems = []
        for check in checks:
            stage = get_stage(check["stage_type"])
            spec = stage.spec_class.model_validate(check["spec"])
            problems.append(stage.preflight(spec, Path(recipe_dir)))
        _send(sender, problems)
    except Exception as exc:  # a bug in a preflight: report it rather than hang the parent
        _send(sender, f"{type(exc).__name__}: {exc}")


def run_in_process(payload: dict[str, Any], error_log: Path) -> StageOutcome:
    """The same contract as :func:`run_isolated`, in this process (for debugging)."""
    return _outcome(_run_payload(payload), error_log)


def _outcome(message: tuple, error_log: Path) -> StageOutcome:
    status, body, lines, peak = message
    if status == "ok":
        return StageOutcome(body, lines, peak)
    if status == "crash":
        error_log.parent.mkdir(parents=True, exist_ok=True)
        error_log.write_text("\n".join(lines) + "\n\n" + body["traceback"])
        raise StageError(f"{body['summary']} (log and traceback: {error_log})")
    raise StageError(body)


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        hint = " — most likely out of memory (the kernel's OOM killer)" if signum == 9 else ""
        return f"the stage's process was killed by signal {signum}{hint}"
    return f"the stage's process exited with code {exitcode} without a result"


def _child_main(sender, payload: dict[str, Any]) -> None:
    """In the child: run the stage, send back its meta or the error."""
    enter_stage_process()
    _send(sender, _run_payload(payload))


def _send(sender, message: Any) -> None:
    # The run went away (stopped, or killed): nobody is left to read the result or a traceback.
    try:
        sender.send(message)
        sender.close()
    except (BrokenPipeError, ConnectionResetError):
        os._exit(1)


def _run_payload(payload: dict[str, Any]) -> tuple:
    """Rebuild spec and inputs, run the stage: ``(status, meta or error, log lines, peak RSS)``."""
    import logging

    from edgepipe.capture import capture_stage_output
    from edgepipe.stages.base import StageContext, get_stage

    lines: list[str] = []
    try:
        stage = get_stage(payload["stage_type"])
        spec = stage.spec_class.model_validate(payload["spec"])
        ctx = StageContext(
            payload["stage_id"],
            Path(payload["recipe_dir"]),
            payload["inputs"],
            Path(payload["out_dir"]),
            logging.getLogger(f"edgepipe.stage.{payload['stage_id']}"),
            payload.get("recorded"),
            Path(payload["toolchain_python"]) if payload.get("toolchain_python") else None,
        )
        with capture_stage_output(lines):
            meta = stage.run(spec, ctx)
        message = ("ok", meta, lines, _peak_rss())
    except EdgepipeError as exc:
        message = ("error", str(exc), lines, _peak_rss())
    except Exception as exc:  # a library error: summarise, keep the traceback for the log file
        body = {
            "summary": summarize_exception(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        }
        message = ("crash", body, lines, _peak_rss())
    return (*message[:2], message[2][-_MAX_LOG_LINES:], message[3])


def _peak_rss() -> int:
    """The stage's peak, its own or a subprocess's (a toolchain's worker), whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024  # Linux reports KiB
