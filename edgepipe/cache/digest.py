"""File digests, digest validation and a persistent stat cache that avoids re-hashing.

The stat cache trusts (resolved path, size, mtime_ns, inode): a file rewritten with the same
size and its mtime forced back is *not* noticed. That is the same contract as git's index and
make; it is what makes a fully cached run cheap on multi-gigabyte checkpoints.
"""

from __future__ import annotations

__all__ = [
    "CHUNK_SIZE",
    "StatCache",
    "check_digest",
    "copy_hashing",
    "hash_stream",
    "is_digest",
    "sha256_file",
]

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# A file modified again within the filesystem's timestamp granularity keeps its mtime, so an
# entry hashed that soon after the last write could go stale unnoticed (git's "racy clean"
# problem). Such entries are hashed but not remembered. 2 s also covers FAT's resolution.
_RACY_WINDOW_NS = 2_000_000_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode TEXT NOT NULL,
    digest TEXT NOT NULL
)
"""


def is_digest(value: object) -> bool:
    """Return whether ``value`` is a 64-character lowercase sha256 hex string."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def check_digest(value: str) -> str:
    """Return ``value`` if it is a valid digest.

    Raises:
        ValueError: It is not 64 lowercase hex characters (so never safe to use in a path).
    """
    if not is_digest(value):
        raise ValueError(f"not a sha256 digest (64 lowercase hex characters): {value!r}")
    return value


def hash_stream(reader: BinaryIO, writer: BinaryIO | None = None) -> tuple[str, int]:
    """sha256 hex digest and size of what ``reader`` yields, in 1 MiB chunks (a local file or
    a remote one), copying it to ``writer`` on the way if given."""
    hasher, size = hashlib.sha256(), 0
    while chunk := reader.read(CHUNK_SIZE):
        hasher.update(chunk)
        size += len(chunk)
        if writer is not None:
            writer.write(chunk)
    return hasher.hexdigest(), size


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    with open(path, "rb") as stream:
        return hash_stream(stream)[0]


def copy_hashing(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Copy ``source`` to the new file ``dest`` and return the sha256 of the bytes copied."""
    with open(source, "rb") as reader, open(dest, "xb") as writer:
        return hash_stream(reader, writer)[0]


def _signature(st: os.stat_result) -> tuple[int, int, str]:
    # The inode is stored as text: some filesystems report inode numbers above sqlite's int64.
    return st.st_size, st.st_mtime_ns, str(st.st_ino)


class StatCache:
    """Digests of files on disk, remembered in ``<root>/statcache.sqlite``.

    Safe to share between threads and processes. The database is only an optimisation: if it
    cannot be opened or written, files are simply hashed every time (with a warning).
    """

    def __init__(self, root: Path) -> None:
        """Create a stat cache; nothing is opened or created before the first ``digest``.

        Args:
            root: Directory holding ``statcache.sqlite``.
        """
        self.path = Path(root) / "statcache.sqlite"
        self._conn: sqlite3.Connection | None = None
        self._disabled = False
        self._read_only = False
        self._mutex = threading.Lock()

    def digest(self, path: Path) -> str:
        """Return the sha256 of ``path``, re-hashing only if its stat signature changed.

        Args:
            path: A regular file; symlinks are resolved and the target is keyed.
        """
        resolved = Path(path).resolve(strict=True)
        before = _signature(os.stat(resolved))
        cached = self._lookup(str(resolved), before)
        if cached is not None:
            return cached
        digest = self._hash(resolved)
        after = _signature(os.stat(resolved))
        # Only remember a digest if the file did not change while it was read.
        if after == before and after[1] < time.time_ns() - _RACY_WINDOW_NS:
            self._store(str(resolved), after, digest)
        return digest

    def holds(self, path: Path, digest: str) -> bool:
        """Return whether ``path`` (a cache object, not resolved) holds exactly ``digest``.

        The bytes are re-hashed unless the file's stat signature is the one remembered when
        they were last found to match, so a corrupted object is noticed as soon as its size,
        mtime or inode moved. Raises FileNotFoundError if there is no such file.
        """
        key = str(path)
        before = _signature(os.stat(path))
        if self._lookup(key, before) == digest:
            return True
        actual = self._hash(path)
        if actual == digest and _signature(os.stat(path)) == before:
            self._store(key, before, digest)
        return actual == digest

    def remember(self, path: Path, digest: str) -> None:
        """Record that ``path`` (a cache object just installed from bytes hashed to
        ``digest``) holds ``digest`` at its current stat signature.

        No racy-clean wait here: objects are read-only and never rewritten in place, so the
        only way the remembered signature goes stale is a change that also moves it.
        """
        with contextlib.suppress(OSError):
            self._store(str(path), _signature(os.stat(path)), digest)

    def close(self) -> None:
        """Close the database connection (it is reopened on the next ``digest``)."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _hash(self, path: Path) -> str:
        # One place to hash, so a subclass can observe or replace it.
        return sha256_file(path)

    def _lookup(self, key: str, signature: tuple[int, int, str]) -> str | None:
        query = "SELECT size, mtime_ns, inode, digest FROM files WHERE path = ?"
        row = self._execute(query, (key,))
        if row is None or tuple(row[:3]) != signature or not is_digest(row[3]):
            return None
        return row[3]

    def _store(self, key: str, signature: tuple[int, int, str], digest: str) -> None:
        if self._read_only:
            return  # a shared cache mounted read-only: use what it remembers, add nothing
        statement = "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)"
        self._execute(statement, (key, *signature, digest))

    def _execute(self, sql: str, params: tuple[object, ...]) -> tuple[object, ...] | None:
        import sqlite3

        with self._mutex:
            try:
                conn = self._connect()
                return None if conn is None else conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                logger.warning("stat cache %s unusable, hashing without it: %s", self.path, exc)
                self._disabled = True
                return None

    def _connect(self) -> sqlite3.Connection | None:
        # Imported lazily: sqlite3 is only needed once a file digest is asked for.
        import sqlite3

        if self._disabled:
            return None
        if self._conn is None:
            if self.path.parent.is_dir() and not os.access(self.path.parent, os.W_OK):
                return self._connect_read_only()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # Losing the last entries in a power cut only costs re-hashing: no fsync per row.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _connect_read_only(self) -> sqlite3.Connection | None:
        # A read-only cache (e.g. a pre-populated CI cache mounted read-only): sqlite cannot
        # create the WAL's shared-memory file there, so open the database as immutable.
        import sqlite3

        self._read_only = True
        if not self.path.is_file():
            self._disabled = True  # nothing remembered: every object is re-hashed
            return None
        uri = f"{self.path.as_uri()}?mode=ro&immutable=1"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._conn
