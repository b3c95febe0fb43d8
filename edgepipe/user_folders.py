"""Folders a user names on the command line (``--out``, ``--cache``, ``$EDGEPIPE_CACHE``),
checked before anything is planned: a regular file, a device, a path under a file, a name too
long for the file system or a place nothing can be created is one readable error naming the
path and the reason, not a traceback halfway through a run."""

from __future__ import annotations

__all__ = ["folder_problem"]

import os
import stat
import tempfile
from pathlib import Path

from edgepipe.recipe_limits import file_kind

_NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def folder_problem(path: Path, probe: bool = False) -> str | None:
    """Why ``path`` cannot be (or become) a folder edgepipe writes into; None when it can.

    Args:
        path: The folder as given.
        probe: Also make (and remove) a folder in it, or in the nearest folder above it that
            exists, so that a place where nothing can be created (/proc, a read-only mount)
            is found now; nothing is left behind.
    """
    path = Path(os.path.abspath(path.expanduser()))
    for part in path.parts:
        if (size := len(os.fsencode(part))) > _NAME_MAX:
            return f"the name {part[:40]}… is {size} bytes long; a file system allows {_NAME_MAX}"
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        mode = os.stat(existing).st_mode
    except OSError as exc:  # a dangling or looping symlink
        return f"{existing} cannot be used: {exc.strerror or exc}"
    if not stat.S_ISDIR(mode):
        where = "" if existing == path else " (so no folder can be made under it)"
        return f"{existing} is a {file_kind(mode)}, not a folder{where}"
    if probe:
        try:  # as root os.access says yes to /proc: only trying tells
            os.rmdir(tempfile.mkdtemp(prefix=".edgepipe-probe-", dir=existing))
        except OSError as exc:
            return f"cannot create anything in {existing}: {exc.strerror or exc}"
    return None
