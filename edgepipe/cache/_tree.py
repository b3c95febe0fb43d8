"""Helpers for storing and materialising directory trees."""

from __future__ import annotations

__all__ = ["link_if_possible", "parse_manifest", "swap_into_place", "walk_files"]

import errno
import json
import os
from pathlib import Path

from edgepipe.cache._layout import remove_any, tmp_name
from edgepipe.cache.models import CacheCorruptError, ManifestEntry

_SWAP_ATTEMPTS = 5


def link_if_possible(source: Path, target: Path) -> bool:
    """Hard-link ``target`` to ``source``; return False where the filesystem cannot.

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:
        return False  # cross-device, link limit reached, or no hard links on this filesystem
    return True


def walk_files(root: Path) -> list[tuple[str, Path]]:
    """Return (posix path relative to ``root``, full path) of every regular file, sorted.

    Raises:
        ValueError: The tree holds a symlink or a special file (socket, fifo, device).
    """
    files: list[tuple[str, Path]] = []
    pending: list[tuple[str, str]] = [(str(root), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as scan:
            for entry in scan:
                relative = prefix + entry.name
                if entry.is_symlink():
                    raise ValueError(
                        f"{entry.path} is a symlink; stage outputs must hold regular files "
                        "(copy the link's target instead)"
                    )
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                elif entry.is_file(follow_symlinks=False):
                    files.append((relative, Path(entry.path)))
                else:
                    raise ValueError(f"{entry.path} is not a regular file or directory")
    return sorted(files)


def parse_manifest(data: bytes, tree_digest: str) -> list[ManifestEntry]:
    """Parse and check a manifest blob: valid entries, no duplicate or file/dir clash.

    Raises:
        CacheCorruptError: The blob is not a valid manifest.
    """
    try:
        raw = json.loads(data)
        entries = [ManifestEntry.model_validate(item) for item in raw["entries"]]
    except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
        raise CacheCorruptError(f"tree {tree_digest}: not a valid manifest ({exc})") from None
    paths = {entry.path for entry in entries}
    if len(paths) != len(entries):
        raise CacheCorruptError(f"tree {tree_digest}: manifest lists a path twice")
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in paths:
                raise CacheCorruptError(f"tree {tree_digest}: {parent} is both a file and a dir")
            parent = parent.rpartition("/")[0]
    return entries


def _move_aside(dest: Path) -> Path | None:
    if not os.path.lexists(dest):
        return None
    old = dest.with_name(f"{dest.name}.{tmp_name('old')}")
    try:
        os.rename(dest, old)
    except FileNotFoundError:
        return None
    return old


def swap_into_place(staging: Path, dest: Path) -> None:
    """Replace ``dest`` (if any) by the directory ``staging``, its sibling on the same filesystem.

    Between the two renames ``dest`` is briefly absent, but never half-populated.
    """
    for _ in range(_SWAP_ATTEMPTS):
        old = _move_aside(dest)
        try:
            os.rename(staging, dest)
        except OSError as exc:
            # EEXIST/ENOTEMPTY: another process put its copy in place between our two renames.
            racing = exc.errno in (errno.EEXIST, errno.ENOTEMPTY)
            if old is not None and racing:
                remove_any(old)
            elif old is not None:
                os.rename(old, dest)  # put the previous version back
            if not racing:
                raise
            continue
        if old is not None:
            remove_any(old)
        return
    raise OSError(errno.EBUSY, "other processes keep replacing this directory", str(dest))
