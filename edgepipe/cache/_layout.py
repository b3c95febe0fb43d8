"""On-disk layout of a cache root and the filesystem helpers every part of the cache shares.

Layout::

    <root>/cas/<2 hex>/<62 hex>          content-addressed objects (read-only)
    <root>/ac/<2 hex>/<62 hex>.json      action records
    <root>/index/<recipe>/<stage>.json   last key document per stage
    <root>/locks/<name>.lock             file locks
    <root>/tmp/<kind>-<pid>-<random>     temporary files and stage work directories
    <root>/statcache.sqlite              stat cache of file digests
"""

from __future__ import annotations

__all__ = [
    "CacheLayout",
    "abandoned",
    "host_id",
    "check_name",
    "owner_pid",
    "pid_alive",
    "random_token",
    "reclaim_abandoned",
    "remove_any",
    "tmp_name",
]

import logging
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgepipe.tmp_names import (
    abandoned,
    host_id,
    owner_pid,
    pid_alive,
    random_token,
    tmp_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from filelock import FileLock

_logger = logging.getLogger(__name__)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one path component (``[A-Za-z0-9_.-]+``, not dots only).

    Raises:
        ValueError: It is not; ``what`` names the value in the message.
    """
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or not value.strip("."):
        raise ValueError(f"{what} must match [A-Za-z0-9_.-]+ and not be only dots, got {value!r}")
    return value


def reclaim_abandoned(folder: Path, marker: str = "") -> int:
    """Remove the temporary entries in ``folder`` left by killed processes of this machine.

    Run at the start of every run (on the cache's tmp/ and on the output folder, whose
    ``<stage>.tmp-…``/``.old-…`` entries are materialisations in progress), so what a
    killed run left never piles up. ``marker`` limits it to names containing it. Returns
    how many entries were removed.
    """
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if marker in name and abandoned(name):
            try:
                remove_any(folder / name)
            except OSError as exc:  # e.g. read-only: the next writable run or gc gets it
                _logger.debug("could not remove %s: %s", folder / name, exc)
                continue
            removed += 1
    return removed


def _make_writable(func: Callable[[str], object], path: str, _exc_info: object) -> None:
    # Objects and hard links to them are read-only; a read-only directory cannot be emptied.
    parent = os.path.dirname(path)
    for target in (parent, path):
        try:
            mode = os.lstat(target).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(target, stat.S_IMODE(mode) | stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        except OSError:
            pass
    func(path)


def remove_any(path: Path) -> None:
    """Delete a file, symlink or directory tree, read-only or not; missing is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        if sys.version_info >= (3, 12):  # onerror is deprecated there; same handler signature
            shutil.rmtree(path, onexc=_make_writable)
        else:
            shutil.rmtree(path, onerror=_make_writable)
    else:
        try:
            path.unlink()
        except PermissionError:
            os.chmod(path.parent, stat.S_IMODE(os.stat(path.parent).st_mode) | stat.S_IWUSR)
            path.unlink()


class CacheLayout:
    """Paths of a cache root and atomic-write helpers shared by the store's layers."""

    def __init__(self, root: Path) -> None:
        """Create the layout; nothing is created on disk until the first write.

        Args:
            root: The cache root directory.
        """
        self.root = root

    @property
    def cas_dir(self) -> Path:
        """Directory of content-addressed objects."""
        return self.root / "cas"

    @property
    def ac_dir(self) -> Path:
        """Directory of action records."""
        return self.root / "ac"

    @property
    def index_dir(self) -> Path:
        """Directory of last key documents per recipe and stage."""
        return self.root / "index"

    @property
    def locks_dir(self) -> Path:
        """Directory of lock files."""
        return self.root / "locks"

    @property
    def tmp_dir(self) -> Path:
        """Directory of temporary files, on the same filesystem as the objects."""
        return self.root / "tmp"

    def _new_tmp_path(self, kind: str) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / tmp_name(kind)

    def atomic_write(self, dest: Path, data: bytes) -> None:
        # Readers see the old file or the new one, never a truncated one.
        tmp = self._new_tmp_path("write")
        try:
            with open(tmp, "xb") as stream:
                stream.write(data)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _file_lock(self, name: str, timeout: float = -1) -> FileLock:
        from filelock import FileLock

        self.locks_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.locks_dir / f"{name}.lock", timeout=timeout)
