"""I/O primitives of a remote cache root on an fsspec filesystem (see :mod:`.remote`).

How a write is made atomic depends on the backend:

- Object stores (``s3``, ``gs``, ``az``…): an object becomes visible only when its single PUT
  (or the completion of its multipart/resumable upload) succeeds, whole; a failed upload leaves
  nothing. Objects are written straight to their final key.
- Every other filesystem (``file://``, sftp, hdfs…): the bytes go to ``<root>/tmp/<unique>``
  and are then moved into place with ``fs.mv``, a rename on those filesystems, so a reader
  never sees a partial file. A killed pusher can leave a file under ``<root>/tmp``; nothing
  reads it, and it can be deleted at any time once no push is running.

fsspec is imported here, only when a remote cache is opened.
"""

from __future__ import annotations

__all__ = ["REMOTE_OPTIONS_ENV", "RemoteCacheError", "RemoteStore", "storage_options"]

import contextlib
import json
import os
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edgepipe.cache._layout import tmp_name
from edgepipe.cache.digest import check_digest, hash_stream
from edgepipe.cache.models import CacheCorruptError
from edgepipe.errors import CacheError

REMOTE_OPTIONS_ENV = "EDGEPIPE_REMOTE_OPTIONS"
# Protocols whose writes are all-or-nothing per object (see the module docstring).
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


class RemoteCacheError(CacheError):
    """The remote cache is misconfigured or could not be reached; the message names its URL."""


def storage_options(explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return fsspec storage options: ``$EDGEPIPE_REMOTE_OPTIONS`` (JSON) updated by ``explicit``.

    Raises:
        RemoteCacheError: The environment variable is not a JSON object.
    """
    raw = os.environ.get(REMOTE_OPTIONS_ENV, "").strip()
    options: Any = {}
    if raw:
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise RemoteCacheError(f"{REMOTE_OPTIONS_ENV} is not valid JSON ({exc})") from None
        if not isinstance(options, dict):
            raise RemoteCacheError(
                f"{REMOTE_OPTIONS_ENV} must be a JSON object of fsspec storage options, "
                'e.g. \'{"endpoint_url": "http://localhost:9000"}\''
            )
    return {**options, **(explicit or {})}


class RemoteStore:
    """Paths and transfers under one remote root; every failure but a missing file is wrapped.

    Attributes:
        url: The remote cache URL as given.
        fs: The fsspec filesystem.
        root: The root path on ``fs`` (no protocol, no trailing slash).
        atomic_put: Whether a single write is atomic (object store) or needs temp-then-move.
    """

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        """Open the filesystem for ``url``.

        Raises:
            RemoteCacheError: Unknown protocol, its fsspec package is missing, or bad options.
        """
        import fsspec  # here, not at module level: a local-only run never imports it

        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except ImportError as exc:
            raise RemoteCacheError(
                f"remote cache {url}: {exc} (install the fsspec backend for this protocol, "
                "e.g. s3fs for s3://, gcsfs for gs://)"
            ) from None
        except (ValueError, TypeError) as exc:
            raise RemoteCacheError(f"remote cache {url}: cannot open it ({exc})") from None
        self.root = root.rstrip("/")
        protocols = self.fs.protocol
        protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        self.atomic_put = bool(protocols & _OBJECT_STORES)

    def object_path(self, digest: str) -> str:
        """Return the remote path of an object (``cas/<2 hex>/<62 hex>``)."""
        check_digest(digest)
        return f"{self.root}/cas/{digest[:2]}/{digest[2:]}"

    def action_path(self, key: str) -> str:
        """Return the remote path of an action record (``ac/<2 hex>/<62 hex>.json``)."""
        check_digest(key)
        return f"{self.root}/ac/{key[:2]}/{key[2:]}.json"

    def url_of(self, path: str) -> str:
        """Return the full URL of a remote path, for messages."""
        return self.fs.unstrip_protocol(path)

    @contextlib.contextmanager
    def _errors(self, what: str, path: str) -> Iterator[None]:
        # Any backend failure (OSError, botocore, aiohttp…) becomes one readable error; a missing
        # file is a normal answer that callers handle.
        try:
            yield
        except (FileNotFoundError, CacheError):
            raise
        except Exception as exc:
            raise RemoteCacheError(
                f"remote cache: {what} {self.url_of(path)} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def size(self, path: str) -> int | None:
        """Return the size of a remote file, or None if it does not exist."""
        with self._errors("checking", path):
            try:
                return int(self.fs.info(path)["size"])
            except FileNotFoundError:
                return None

    def read_bytes(self, path: str) -> bytes | None:
        """Return a (small) remote file's bytes, or None if it does not exist."""
        with self._errors("reading", path):
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None

    def list_files(self, prefix: str) -> dict[str, int]:
        """Return path → size of every file under ``prefix`` (empty if there is none)."""
        with self._errors("listing", prefix):
            self.fs.invalidate_cache(prefix)  # other machines write here; never trust a cache
            found = self.fs.find(prefix, detail=True)
        return {path: int(info.get("size") or 0) for path, info in found.items()}

    def hash_file(self, path: str) -> str:
        """Stream a remote file and return its sha256.

        Raises:
            FileNotFoundError: It does not exist (e.g. deleted since it was listed).
        """
        with self._errors("reading", path), self.fs.open(path, "rb") as stream:
            return hash_stream(stream)[0]

    def download_verified(self, digest: str, dest: Path) -> int:
        """Stream object ``digest`` into the new local file ``dest``; return its size.

        Raises:
            FileNotFoundError: The object is not on the remote.
            CacheCorruptError: Its bytes do not hash to ``digest`` (``dest`` is then removed).
        """
        path = self.object_path(digest)
        try:
            with (
                self._errors("downloading", path),
                self.fs.open(path, "rb") as src,
                open(dest, "xb") as out,
            ):
                actual, size = hash_stream(src, out)
            if actual != digest:
                raise CacheCorruptError(
                    f"remote object {digest} at {self.url_of(path)} is corrupt: its content "
                    f"hashes to {actual}; delete it (or re-push the stage) so it is uploaded again"
                )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size

    def upload_file(self, local: Path, path: str) -> None:
        """Upload a local file to ``path`` atomically (see the module docstring)."""
        with self._errors("uploading to", path):
            self._write(path, lambda target: self.fs.put_file(str(local), target))

    def upload_bytes(self, data: bytes, path: str) -> None:
        """Write ``data`` to ``path`` atomically (see the module docstring)."""
        with self._errors("writing", path):
            self._write(path, lambda target: self.fs.pipe_file(target, data))

    def _write(self, path: str, write: Any) -> None:
        if self.atomic_put:
            write(path)
            return
        tmp_dir = f"{self.root}/tmp"
        tmp = f"{tmp_dir}/{tmp_name('push')}"
        self.fs.makedirs(tmp_dir, exist_ok=True)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            write(tmp)
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise
