"""Content-addressed store: files by sha256, directories by a manifest of their files.

A directory is stored as a manifest blob, the canonical JSON ``{"entries": [...]}`` listing
every regular file (path, digest, size, executable bit), so its digest is a Merkle root over
the file contents. Empty sub-directories carry no content and are not recorded.
"""

from __future__ import annotations

__all__ = ["ContentStore"]

import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from edgepipe.cache import _tree
from edgepipe.cache._layout import CacheLayout, remove_any, tmp_name
from edgepipe.cache.digest import StatCache, check_digest, copy_hashing, sha256_file
from edgepipe.cache.keys import canonical_json
from edgepipe.cache.models import CacheCorruptError, ManifestEntry

logger = logging.getLogger(__name__)

_OBJECT_MODE = 0o444
# Re-storing an existing object refreshes its mtime so gc's grace period protects it until the
# action record that references it is written; refreshing at most every 10 minutes keeps churn
# (and mtime changes seen through hard links) low while staying well inside the 1-hour grace.
_REFRESH_AFTER_S = 600


class ContentStore(CacheLayout):
    """The CAS half of the cache; objects live at ``cas/<2 hex>/<62 hex>`` and are read-only.

    It never hands out bytes that do not match their digest: an object is re-hashed whenever
    its stat signature is not the one remembered at install (see :meth:`intact`), and storing
    bytes that are already present re-hashes the stored copy. A corrupt object is removed, so
    whatever needs it is rebuilt.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._stat_cache: StatCache | None = None
        # digest -> what was wrong with it, for objects found corrupt (and removed) this session
        self.corrupt: dict[str, str] = {}

    @property
    def signatures(self) -> StatCache:
        """The stat cache (``statcache.sqlite``) of object signatures and input file digests."""
        if self._stat_cache is None:
            self._stat_cache = StatCache(self.root)
        return self._stat_cache

    def object_path(self, digest: str) -> Path:
        """Return where the object with this digest is (or would be) stored.

        Raises:
            ValueError: ``digest`` is not a sha256 hex digest.
        """
        check_digest(digest)
        return self.cas_dir / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """Return whether the object is present (not whether its bytes are intact)."""
        return self.object_path(digest).is_file()

    def intact(self, digest: str) -> bool:
        """Return whether the object is present and its bytes hash to ``digest``.

        Cheap when the object's stat signature is the one remembered (one stat and one
        lookup); otherwise the bytes are re-hashed. A corrupt object is removed (and noted in
        :attr:`corrupt`) so that the stage that made it is rebuilt.
        """
        path = self.object_path(digest)
        try:
            if self.signatures.holds(path, digest):
                return True
        except FileNotFoundError:
            return False
        self._discard_corrupt(digest, "its bytes do not match its digest")
        return False

    def _discard_corrupt(self, digest: str, problem: str) -> None:
        self.corrupt[digest] = problem
        # info, not warning: the planner reports it on the stage that is rebuilt because of it
        logger.info("cache object %s is corrupt (%s); removed", digest, problem)
        try:
            remove_any(self.object_path(digest))
        except OSError as exc:  # a read-only cache: it stays, and is never served
            logger.debug("could not remove corrupt object %s: %s", digest, exc)

    def put_file(self, path: Path) -> str:
        """Store a regular file's bytes and return their digest.

        Files under :meth:`new_workdir` directories are hard-linked into the store instead of
        copied (and so become read-only): do not modify them after storing them.

        Raises:
            ValueError: ``path`` is not a regular file.
            RuntimeError: The file changed while it was being copied in.
        """
        source = Path(path).resolve()
        if not stat.S_ISREG(os.stat(source).st_mode):
            raise ValueError(f"{path} is not a regular file; only file contents can be stored")
        if source.is_relative_to(self.tmp_dir.resolve()):
            return self._put_owned(source)
        return self._put_copy(source)

    def put_tree(self, directory: Path) -> str:
        """Store every regular file under ``directory`` and return the tree digest.

        Raises:
            NotADirectoryError: ``directory`` is not a directory.
            ValueError: The tree holds a symlink or a special file.
        """
        root = Path(directory)
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is not a directory")
        entries = []
        for relative, full in _tree.walk_files(root):
            # Read the mode first: storing a work-directory file makes it read-only.
            executable = bool(os.stat(full).st_mode & stat.S_IXUSR)
            digest = self.put_file(full)
            size = self.object_path(digest).stat().st_size
            entries.append(
                ManifestEntry(path=relative, digest=digest, size=size, executable=executable)
            )
        tree = self._put_bytes(canonical_json({"entries": [e.model_dump() for e in entries]}))
        logger.debug("stored %s as tree %s (%d files)", root, tree, len(entries))
        return tree

    def read_manifest(self, tree_digest: str) -> list[ManifestEntry]:
        """Return the entries of a stored tree, in path order.

        Raises:
            CacheCorruptError: The manifest is missing, does not match its digest or is invalid.
        """
        path = self.object_path(tree_digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheCorruptError(f"tree {tree_digest} is not in the cache") from None
        if hashlib.sha256(data).hexdigest() != tree_digest:
            self._discard_corrupt(tree_digest, "the manifest does not match its digest")
            raise CacheCorruptError(f"tree {tree_digest}: manifest does not match its digest")
        return _tree.parse_manifest(data, tree_digest)

    def tree_size(self, tree_digest: str) -> int:
        """Return the total size in bytes of the files of a stored tree."""
        return sum(entry.size for entry in self.read_manifest(tree_digest))

    def materialize_tree(
        self, tree_digest: str, dest: Path, copy_if: Callable[[str], bool] | None = None
    ) -> None:
        """Make ``dest`` a directory holding exactly the files of a stored tree.

        Files are hard links to the (read-only) objects where possible, else copies. The tree is
        built beside ``dest`` and swapped in, so readers never see a half-populated directory;
        whatever was at ``dest`` before is removed. ``copy_if(path)`` forces a private copy
        of a file (ONNX refuses external-data files with more than one hard link).

        Raises:
            CacheCorruptError: The manifest or one of its objects is missing or invalid.
        """
        entries = self.read_manifest(tree_digest)
        target = Path(os.path.abspath(dest))
        if not target.name:
            raise ValueError(f"cannot materialise a tree over {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f"{target.name}.{tmp_name('tmp')}")
        staging.mkdir()
        try:
            for entry in entries:
                self._place(entry, staging / entry.path, bool(copy_if and copy_if(entry.path)))
            _tree.swap_into_place(staging, target)
        except BaseException:
            remove_any(staging)
            raise
        logger.debug("materialised tree %s at %s", tree_digest, target)

    def _place(self, entry: ManifestEntry, target: Path, copy: bool = False) -> None:
        source = self.object_path(entry.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A hard link shares the object's read-only mode, so executables are copied.
            if copy or entry.executable or not _tree.link_if_possible(source, target):
                shutil.copyfile(source, target)
                os.chmod(target, 0o755 if entry.executable else 0o644)
        except FileNotFoundError:
            raise CacheCorruptError(
                f"object {entry.digest} ({entry.path}) is missing from the cache"
            ) from None

    def _refresh_existing(self, digest: str) -> bool:
        # Return whether a sound copy of the object is stored, refreshing its mtime if old (see
        # _REFRESH_AFTER_S). The stored copy is re-hashed in full, not trusted on its stat
        # signature: this is the moment a rebuild (or --force) can replace a corrupt object.
        path = self.object_path(digest)
        try:
            if sha256_file(path) != digest:
                self._discard_corrupt(digest, "its bytes do not match its digest")
                return False
            if time.time() - path.stat().st_mtime > _REFRESH_AFTER_S:
                os.utime(path)
            # just hashed: the next cached run need not hash it again (an object stored before
            # signatures were remembered gets one now)
            self.signatures.remember(path, digest)
        except FileNotFoundError:
            return False
        except PermissionError:
            pass  # someone else's object in a shared cache; it is sound, which is what matters
        return True

    def adopt(self, tmp: Path, digest: str) -> None:
        """Install ``tmp``, a private file under tmp/ whose bytes the caller has just hashed
        to ``digest`` (e.g. a verified download), without reading it again. If the object is
        already stored, ``tmp`` is left for the caller to remove."""
        if self._refresh_existing(digest):
            return
        with self._file_lock(digest):
            if not self._refresh_existing(digest):
                self._install(tmp, digest)

    def _put_owned(self, source: Path) -> str:
        # The file is ours (under tmp/, same filesystem): link instead of copying, then hash the
        # link, so what gets installed is exactly what was hashed.
        tmp = self._new_tmp_path("link")
        try:
            os.link(source, tmp)
        except OSError:
            return self._put_copy(source)
        try:
            digest = sha256_file(tmp)
            self.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def _put_copy(self, source: Path) -> str:
        digest = sha256_file(source)
        if self._refresh_existing(digest):
            return digest
        with self._file_lock(digest):
            if self._refresh_existing(digest):
                return digest
            tmp = self._new_tmp_path("put")
            try:
                if copy_hashing(source, tmp) != digest:
                    raise RuntimeError(f"{source} changed while being stored; store it again")
                self._install(tmp, digest)
            finally:
                tmp.unlink(missing_ok=True)
        return digest

    def _put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self._refresh_existing(digest):
            return digest
        tmp = self._new_tmp_path("put")
        try:
            tmp.write_bytes(data)
            self.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def _install(self, tmp: Path, digest: str) -> None:
        # tmp holds exactly the bytes of digest; the rename makes the object appear atomically.
        os.chmod(tmp, _OBJECT_MODE)
        os.utime(tmp)  # a linked file keeps the stage's mtime; gc's grace counts from now
        dest = self.object_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        self.signatures.remember(dest, digest)
        self.corrupt.pop(digest, None)
