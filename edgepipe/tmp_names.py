"""Names of temporary files and folders that record who made them: ``<kind>-<pid>@<host>-<random>``.

A leftover of a killed run can then be told from the work of a live one, at once and whatever
its age. Stdlib only: the cache (``cache/_layout.py``) makes and reclaims these names, and the
no-op fast path (``noop_run.py``), which runs before anything else is imported, checks for them.
"""

from __future__ import annotations

__all__ = ["abandoned", "host_id", "owner_pid", "pid_alive", "random_token", "tmp_name"]

import functools
import hashlib
import os
import re
import socket
from pathlib import Path

# names from before the host part was added have no "@<host>"
_TMP_NAME_RE = re.compile(r".+-(?P<pid>\d+)(@(?P<host>[0-9a-f]{8}))?-[0-9a-f]{16}")


def random_token() -> str:
    """Return 16 random hex characters."""
    return os.urandom(8).hex()


def tmp_name(kind: str) -> str:
    """Return a unique temporary name that records its creator (process id and host, see
    :func:`abandoned`)."""
    return f"{kind}-{os.getpid()}@{host_id()}-{random_token()}"


def owner_pid(name: str) -> int | None:
    """Return the process id recorded in a name made by :func:`tmp_name`, if any."""
    match = _TMP_NAME_RE.fullmatch(name)
    return int(match["pid"]) if match else None


def abandoned(name: str) -> bool:
    """Whether a :func:`tmp_name` entry was made on this machine by a process that is gone.

    Such an entry is a leftover of a killed run and can go at once, whatever its age. An
    entry from another host (a cache on a shared disk) or another pid namespace (containers
    sharing a cache) cannot be judged by its pid: it is left to gc's age rule.
    """
    match = _TMP_NAME_RE.fullmatch(name)
    if match is None or match["host"] != host_id():
        return False
    return not pid_alive(int(match["pid"]))


@functools.cache
def host_id() -> str:
    """8 hex characters naming this boot of this machine and this pid namespace."""
    parts = [socket.gethostname()]
    try:  # Linux: a reboot recycles pids, and each container has its own pid namespace
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Return whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True
