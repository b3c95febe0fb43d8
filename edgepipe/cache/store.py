"""The :class:`Cache`: content-addressed store + action cache + locks + maintenance, on disk."""

from __future__ import annotations

__all__ = ["Cache"]

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.cache import maintenance
from edgepipe.cache._layout import check_name, reclaim_abandoned, tmp_name
from edgepipe.cache.actions import ActionCache
from edgepipe.cache.keys import default_cache_dir

if TYPE_CHECKING:
    from filelock import FileLock


class Cache(ActionCache):
    """A local cache root shared safely by concurrent edgepipe processes.

    Every write is a temporary file under ``<root>/tmp`` renamed into place, so a killed
    process never leaves a truncated record or an object whose bytes differ from its name.

    Attributes:
        root: The cache root directory.
    """

    def __init__(self, root: Path | None = None) -> None:
        """Open a cache; nothing is created on disk until the first write.

        Args:
            root: Cache root; ``None`` means :func:`default_cache_dir` (``$EDGEPIPE_CACHE``).
        """
        chosen = default_cache_dir() if root is None else Path(root)
        super().__init__(Path(os.path.abspath(chosen.expanduser())))

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def file_digest(self, path: Path) -> str:
        """Return a file's sha256, re-hashing only when its size, mtime or inode changed."""
        return self.signatures.digest(Path(path))

    def writable(self) -> bool:
        """Return whether this process can write to the cache (it may not exist yet).

        A shared cache mounted read-only serves fully cached runs; it cannot take new builds.
        """
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        return os.access(existing, os.W_OK)

    def lock(self, name: str, timeout: float = -1) -> FileLock:
        """Return an inter-process lock ``<root>/locks/<name>.lock``; use it as a context manager.

        Args:
            name: Lock name, ``[A-Za-z0-9_.-]+``.
            timeout: Seconds to wait when acquiring; negative waits forever, 0 tries once.
                Acquiring past it raises ``filelock.Timeout``.
        """
        return self._file_lock(check_name(name, "lock name"), timeout)

    def new_workdir(self, prefix: str) -> Path:
        """Create and return a fresh directory for a stage to write its output into.

        It lives under ``<root>/tmp`` (same filesystem as the objects, so storing its files is
        a hard link, not a copy) and is named after this process, so gc leaves it alone while
        the process lives. Delete it once its contents are stored.

        Args:
            prefix: Readable name part, ``[A-Za-z0-9_.-]+`` (e.g. the stage id).
        """
        check_name(prefix, "work directory prefix")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = self.tmp_dir / tmp_name(prefix)
        path.mkdir()
        return path

    def reclaim_abandoned(self, out_dir: Path | None = None) -> int:
        """Remove what killed runs on this machine left in tmp/ (and, if given, the temporary
        ``<stage>.tmp-…`` folders of ``out_dir``); return how many entries went."""
        removed = reclaim_abandoned(self.tmp_dir)
        if out_dir is not None:
            removed += reclaim_abandoned(Path(out_dir), marker=".")
        return removed

    def info(self) -> dict[str, Any]:
        """Return ``root``, ``objects``, ``object_bytes``, ``actions`` and ``tmp_entries``."""
        return maintenance.info(self)

    def verify(self) -> list[str]:
        """Re-hash every object and check every action record; an empty list means healthy."""
        return maintenance.verify(self)

    def gc(
        self,
        older_than_seconds: float | None = None,
        max_size_bytes: int | None = None,
    ) -> dict[str, int]:
        """Collect garbage; see :func:`edgepipe.cache.maintenance.gc`.

        Args:
            older_than_seconds: Delete action records not used for this long.
            max_size_bytes: Delete least-recently-used records until their objects fit.

        Returns:
            ``actions_removed``, ``objects_removed``, ``tmp_removed`` and ``bytes_freed``.
        """
        return maintenance.gc(self, older_than_seconds, max_size_bytes)

    def clear(self) -> None:
        """Delete everything under the cache root."""
        self.close()
        maintenance.clear(self)

    def close(self) -> None:
        """Close the stat cache database, if open; the cache stays usable."""
        if self._stat_cache is not None:
            self._stat_cache.close()
