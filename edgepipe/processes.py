"""Stage processes that never outlive the run: stopping them on a signal, and dying with it.

Each stage runs in a child forked by the multiprocessing forkserver (see executor.py). That
child leads its own process group, so the run can stop it and anything it started with one
``killpg``, and a Ctrl-C typed at the terminal reaches only edgepipe itself, which then
stops the stages, removes their temporary files and says what stays cached.

If edgepipe itself is killed (``kill -9``, a CI runner cancelling a job), nothing can clean up
in it. The forkserver notices when the last holder of its "alive" pipe goes away and exits;
each stage child has asked Linux to kill it when the forkserver dies (``PR_SET_PDEATHSIG``).
That chain only works if stage children do not hold the alive pipe themselves, which
multiprocessing hands to every child it forks (so that a child could use the forkserver in
turn): :func:`enter_stage_process` closes it. The temporary directory of a killed run is
reclaimed by the next run (see ``edgepipe.cache.maintenance.reclaim_tmp``).
"""

from __future__ import annotations

__all__ = [
    "Interrupted",
    "deferred",
    "enter_stage_process",
    "is_stopping",
    "kill_stage",
    "signals_stop_the_run",
    "sigint_ignored",
    "stop_running_stages",
    "track",
    "untrack",
]

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.RLock()  # re-entrant: the signal handler runs on the thread that may hold it
_running: dict[int, str] = {}  # pid (= process group) of a live stage child -> its stage id
_stopping = threading.Event()


class Interrupted(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    """SIGINT or SIGTERM reached the run; raised in the main thread after stages are stopped.

    A BaseException, so no ``except Exception`` in a stage or a library swallows it.
    """

    def __init__(self, signum: int, stopped: list[str]):
        self.signum = signum
        self.stopped = stopped
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def track(pid: int, stage_id: str) -> None:
    """Register a started stage child so a signal can stop it (see :func:`untrack`)."""
    with _lock:
        _running[pid] = stage_id
    if _stopping.is_set():  # the signal came between the child's start and this registration
        kill_stage(pid)


def untrack(pid: int) -> None:
    """Forget a stage child that has ended."""
    with _lock:
        _running.pop(pid, None)


def is_stopping(grace: float = 0.5) -> bool:
    """Whether the run is being stopped, so that a stage child that just died was killed by
    it. Waits up to ``grace`` seconds: a signal sent to the whole process group reaches the
    forkserver and the stage at once, and edgepipe's own handler (which runs on the main
    thread) may land a moment after a worker thread has seen its stage die."""
    return _stopping.wait(grace)


def stop_running_stages() -> list[str]:
    """Kill every running stage's process group; return the ids of the stages stopped."""
    _stopping.set()
    with _lock:
        running = dict(_running)
    for pid in running:
        kill_stage(pid)
    return sorted(set(running.values()) - {""})


def kill_stage(pid: int) -> None:
    """SIGKILL a stage child's process group, and the child itself in case it has not made
    its group yet (it does so first thing after the fork)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def signals_stop_the_run() -> Iterator[None]:
    """In the main thread: SIGINT/SIGTERM stop the stages, then raise :class:`Interrupted`.

    A second signal while the first is being handled ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if caught:
            os._exit(128 + signum)
        caught.append(signum)
        if _deferred.depth:  # starting a child: raise once it is tracked (see deferred)
            _deferred.pending = signum
            return
        raise Interrupted(signum, stop_running_stages())

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Deferred(threading.local):
    depth = 0
    pending: int | None = None


_deferred = _Deferred()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back the stop a signal asks for until the block ends: wrap starting a child and
    tracking it, so that a signal cannot land between the two and leave the child running
    untracked (it would be forked by the forkserver after edgepipe had already left)."""
    _deferred.depth += 1
    try:
        yield
    finally:
        _deferred.depth -= 1
        signum, _deferred.pending = _deferred.pending, None
        if signum is not None and not _deferred.depth:
            raise Interrupted(signum, stop_running_stages())


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Start the forkserver with SIGINT ignored: the ignored disposition survives its exec, so
    neither it (importing torch for seconds) nor the stages it forks print a KeyboardInterrupt
    traceback on Ctrl-C; edgepipe stops them itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def enter_stage_process() -> None:
    """In a freshly forked stage child: lead a process group, die with the forkserver, and
    let go of the forkserver's alive pipe (see the module docstring)."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _close_forkserver_alive_pipe()
    die_with_parent()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (kill -9 included).

    SIGKILL, not a catchable signal: Python runs handlers only between bytecodes, and a stage
    can sit in one long C++ call (an export, a simplification) for minutes. Also usable as a
    ``preexec_fn`` for a stage's own subprocesses.
    """
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: an orphaned stage finishes alone
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _close_forkserver_alive_pipe() -> None:
    # multiprocessing keeps the write end in a private attribute; the forkserver exits when
    # every copy is closed, which is what lets a killed run take its stages down with it.
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None
