"""Cache maintenance: size report, integrity check, garbage collection, clearing.

gc may run while other processes use the cache. Temporary entries of a live process, objects
stored within the last hour (a run stores its objects before the record that references them)
and records used since gc looked at them are kept. A hit racing its own eviction can still
find its output gone; the runner then sees a CacheCorruptError and runs the stage again.
"""

from __future__ import annotations

__all__ = [
    "OBJECT_GRACE_S",
    "TMP_MAX_AGE_S",
    "clear",
    "gc",
    "info",
    "verify",
]

import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.cache._layout import abandoned, owner_pid, pid_alive, remove_any
from edgepipe.cache.actions import ActionCache
from edgepipe.cache.digest import is_digest, sha256_file
from edgepipe.cache.models import ActionRecord, CacheCorruptError

logger = logging.getLogger(__name__)

TMP_MAX_AGE_S = 3600.0
OBJECT_GRACE_S = 3600.0


@dataclass
class _Live:
    path: Path
    mtime_ns: int
    objects: dict[str, int] = field(default_factory=dict)  # digest -> size, manifest included


def info(cache: ActionCache) -> dict[str, Any]:
    """Return counts and sizes: root, objects, object_bytes, actions, tmp_entries."""
    objects = object_bytes = 0
    for _, path in _iter_objects(cache):
        try:
            object_bytes += path.stat().st_size
        except FileNotFoundError:
            continue
        objects += 1
    tmp_entries = len(list(cache.tmp_dir.iterdir())) if cache.tmp_dir.is_dir() else 0
    return {
        "root": str(cache.root),
        "objects": objects,
        "object_bytes": object_bytes,
        "actions": sum(1 for _ in cache.ac_dir.glob("*/*.json")),
        "tmp_entries": tmp_entries,
    }


def verify(cache: ActionCache) -> list[str]:
    """Re-hash every object and check every action record; return one line per problem."""
    problems = list(_verify_objects(cache))
    for scan in cache.scan_actions():
        if scan.record is None:
            problems.append(f"action record {scan.path}: {scan.error}")
        else:
            problems.extend(_verify_record(cache, scan.record))
    return problems


def gc(
    cache: ActionCache,
    older_than_seconds: float | None = None,
    max_size_bytes: int | None = None,
) -> dict[str, int]:
    """Delete stale temporary entries, old or least-recently-used records, unreferenced objects.

    Returns:
        ``actions_removed``, ``objects_removed``, ``tmp_removed`` and ``bytes_freed`` (objects
        plus temporary entries).
    """
    now = time.time()
    tmp_removed, tmp_bytes = _clean_tmp(cache, now)
    live, actions_removed = _load_live(cache)
    if older_than_seconds is not None:
        cutoff_ns = int((now - older_than_seconds) * 1e9)
        actions_removed += _evict([r for r in live if r.mtime_ns < cutoff_ns], live)
    if max_size_bytes is not None:
        actions_removed += _evict(_lru_victims(live, max_size_bytes), live)
    referenced = {digest for record in live for digest in record.objects}
    objects_removed, object_bytes = _sweep_objects(cache, referenced, now)
    _sweep_locks(cache, now)
    result = {
        "actions_removed": actions_removed,
        "objects_removed": objects_removed,
        "tmp_removed": tmp_removed,
        "bytes_freed": object_bytes + tmp_bytes,
    }
    logger.info("cache gc in %s: %s", cache.root, result)
    return result


def clear(cache: ActionCache) -> None:
    """Remove everything under the cache root (the root itself stays)."""
    if cache.root.is_dir():
        for child in cache.root.iterdir():
            remove_any(child)


def _iter_objects(cache: ActionCache) -> Iterator[tuple[str, Path]]:
    # (name the entry claims to be, path); the name is a digest only for well-formed entries.
    for path in cache.cas_dir.glob("*/*"):
        yield path.parent.name + path.name, path


def _verify_objects(cache: ActionCache) -> Iterator[str]:
    for name, path in sorted(_iter_objects(cache)):
        if not is_digest(name) or not path.is_file():
            yield f"{path}: unexpected entry in the object store"
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            yield f"object {name}: unreadable ({exc})"
            continue
        if actual != name:
            yield f"object {name}: content hashes to {actual}; the object is corrupt"


def _verify_record(cache: ActionCache, record: ActionRecord) -> list[str]:
    label = f"action {record.key} ({record.recipe}/{record.stage_id})"
    try:
        entries = cache.read_manifest(record.output_digest)
    except CacheCorruptError as exc:
        return [f"{label}: {exc}"]
    return [
        f"{label}: output file {entry.path} (object {entry.digest}) is missing"
        for entry in entries
        if not cache.has(entry.digest)
    ]


def _load_live(cache: ActionCache) -> tuple[list[_Live], int]:
    # Records that are unreadable or whose output is gone can never be hits again: delete them.
    live: list[_Live] = []
    removed = 0
    for scan in cache.scan_actions():
        objects = None if scan.record is None else _record_objects(cache, scan.record)
        if objects is None:
            removed += _delete_record(scan.path, scan.mtime_ns)
        else:
            live.append(_Live(scan.path, scan.mtime_ns, objects))
    return live, removed


def _record_objects(cache: ActionCache, record: ActionRecord) -> dict[str, int] | None:
    try:
        entries = cache.read_manifest(record.output_digest)
        objects = {record.output_digest: cache.object_path(record.output_digest).stat().st_size}
    except (CacheCorruptError, FileNotFoundError):
        return None
    for entry in entries:
        if not cache.has(entry.digest):
            return None
        objects[entry.digest] = entry.size
    return objects


def _delete_record(path: Path, mtime_ns: int) -> bool:
    # Keep a record that was used (its mtime touched) since it was scanned.
    try:
        if path.stat().st_mtime_ns != mtime_ns:
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _evict(victims: list[_Live], live: list[_Live]) -> int:
    removed = 0
    for victim in victims:
        if _delete_record(victim.path, victim.mtime_ns):
            live.remove(victim)
            removed += 1
    return removed


def _lru_victims(live: list[_Live], max_size_bytes: int) -> list[_Live]:
    # Drop least-recently-used records until the objects the rest reference fit; an object
    # shared by several records is freed (and counted) only once its last record goes.
    refs = Counter(digest for record in live for digest in record.objects)
    sizes = {digest: size for record in live for digest, size in record.objects.items()}
    total = sum(sizes.values())
    victims = []
    for record in sorted(live, key=lambda r: r.mtime_ns):
        if total <= max_size_bytes:
            break
        victims.append(record)
        for digest in record.objects:
            refs[digest] -= 1
            if refs[digest] == 0:
                total -= sizes[digest]
    return victims


def _sweep_objects(cache: ActionCache, referenced: set[str], now: float) -> tuple[int, int]:
    removed = freed = 0
    for name, path in _iter_objects(cache):
        if name in referenced or not is_digest(name):
            continue
        try:
            st = path.stat()
            if now - st.st_mtime < OBJECT_GRACE_S or not stat.S_ISREG(st.st_mode):
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += st.st_size
    return removed, freed


def _clean_tmp(cache: ActionCache, now: float) -> tuple[int, int]:
    removed = freed = 0
    if not cache.tmp_dir.is_dir():
        return 0, 0
    for entry in cache.tmp_dir.iterdir():
        dead_here = abandoned(entry.name)
        pid = owner_pid(entry.name)
        if not dead_here and pid is not None and pid_alive(pid):
            continue  # its process may still be writing, however long that takes
        newest, size = _walk_stats(entry)
        if dead_here or now - newest > TMP_MAX_AGE_S:
            remove_any(entry)
            removed += 1
            freed += size
    return removed, freed


def _walk_stats(path: Path) -> tuple[float, int]:
    # Newest mtime and total file bytes of a file or tree: a directory's own mtime does not
    # change when a file inside it is written, so a busy work directory can look old.
    paths = [str(path)]
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            paths.extend(os.path.join(root, name) for name in [*dirs, *files])
    newest, size = 0.0, 0
    for item in paths:
        try:
            st = os.lstat(item)
        except FileNotFoundError:
            continue
        newest = max(newest, st.st_mtime)
        # A hard link into the object store frees nothing when removed.
        size += st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0
    return newest, size


def _sweep_locks(cache: ActionCache, now: float) -> None:
    # Per-object and per-action lock files pile up (one per object or action ever written);
    # other named locks are left alone. Unlinking while holding the lock is safe: filelock
    # retries on an unlinked inode.
    from filelock import FileLock, Timeout

    for path in cache.locks_dir.glob("*.lock"):
        try:
            if not is_digest(path.stem.removeprefix("action-")):
                continue
            if now - path.stat().st_mtime < OBJECT_GRACE_S:
                continue
            with FileLock(path, timeout=0):
                path.unlink(missing_ok=True)
        except (Timeout, FileNotFoundError):
            continue
