"""A remote cache on any fsspec filesystem, shared by machines that run the same recipes.

The remote mirrors the local layout: objects at ``cas/<2 hex>/<62 hex>``, action records at
``ac/<2 hex>/<62 hex>.json``. A push uploads the objects first and the record last, so a reader
never finds a record whose objects were not uploaded; a pull verifies every object's sha256
before it enters the local store, so a corrupt remote never poisons the local cache. Pushing
the same action twice, even concurrently, rewrites identical bytes and is harmless.

Configuration is fsspec's own: credentials from the environment (``AWS_*``…), extra options from
``$EDGEPIPE_REMOTE_OPTIONS`` (a JSON object, e.g. ``{"endpoint_url": "http://minio:9000"}``)
or the ``storage_options`` argument. See :mod:`.remote_store` for how each backend makes a
write atomic.
"""

from __future__ import annotations

__all__ = ["REMOTE_OPTIONS_ENV", "RemoteCache", "RemoteCacheError"]

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgepipe.cache._layout import tmp_name
from edgepipe.cache.digest import check_digest, sha256_file
from edgepipe.cache.models import ActionRecord, CacheCorruptError, parse_record
from edgepipe.cache.remote_store import (
    REMOTE_OPTIONS_ENV,
    RemoteCacheError,
    RemoteStore,
)
from edgepipe.cache.remote_store import storage_options as _storage_options

if TYPE_CHECKING:
    from edgepipe.cache.store import Cache

logger = logging.getLogger(__name__)


class RemoteCache:
    """A remote action cache + CAS in front of which sits a local :class:`Cache`.

    Attributes:
        url: The remote URL, e.g. ``s3://bucket/prefix`` or ``file:///shared/cache``.
        local: The local cache that pulls fill and pushes read from.
    """

    def __init__(
        self, url: str, local: Cache, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        """Open the remote; nothing is read or written until the first call.

        Args:
            url: Any URL fsspec understands (its backend package must be installed).
            local: The local cache.
            storage_options: fsspec options; they override ``$EDGEPIPE_REMOTE_OPTIONS``.

        Raises:
            RemoteCacheError: The URL or options are unusable.
        """
        self.url = url
        self.local = local
        self._store = RemoteStore(url, _storage_options(storage_options))

    def __repr__(self) -> str:
        return f"RemoteCache({self.url!r}, {self.local!r})"

    def has_action(self, key: str) -> bool:
        """Return whether the remote holds a record for ``key`` (its objects are not checked).

        Raises:
            RemoteCacheError: The remote could not be reached.
        """
        return self._store.size(self._store.action_path(key)) is not None

    def pull(self, key: str) -> ActionRecord | None:
        """Return the record for ``key``, fetching it and its outputs from the remote if needed.

        A local hit returns at once. Otherwise every object the local cache lacks is downloaded,
        its sha256 checked, and stored; the record is stored last.

        Returns:
            The record, or None when neither cache has it (or the remote's copy is incomplete).

        Raises:
            CacheCorruptError: A remote object or record is corrupt (nothing wrong is stored).
            RemoteCacheError: The remote could not be reached.
        """
        check_digest(key)
        record = self.local.get_action(key)
        if record is not None:
            return record
        record = self._fetch_record(key)
        if record is None:
            logger.debug("remote miss for action %s in %s", key, self.url)
            return None
        try:
            count, size = self._fetch_tree(record.output_digest)
        except FileNotFoundError as exc:
            logger.warning(
                "remote action %s in %s lists an object that is missing there (%s); "
                "treating it as a miss (the next push uploads it again)",
                key,
                self.url,
                exc.filename or exc,
            )
            return None
        self.local.put_action(record)
        logger.info(
            "pulled %s/%s (action %s) from %s: %d objects, %s downloaded",
            record.recipe,
            record.stage_id,
            key[:12],
            self.url,
            count,
            _fmt_bytes(size),
        )
        return record

    def pull_tree(self, tree_digest: str) -> None:
        """Fetch an output tree by its digest (what a key document's ``inputs`` name): how a
        cluster worker gets a stage's inputs. Objects are verified as in :meth:`pull`.

        Raises:
            FileNotFoundError: The remote lacks the tree or one of its objects.
            CacheCorruptError, RemoteCacheError: As for :meth:`pull`.
        """
        check_digest(tree_digest)
        self._fetch_tree(tree_digest)

    def push_tree(self, tree_digest: str) -> tuple[int, int]:
        """Upload the objects of an output tree the remote lacks; (objects, bytes) uploaded."""
        entries = self.local.read_manifest(tree_digest)
        digests = list(dict.fromkeys([tree_digest, *(e.digest for e in entries)]))
        uploaded = size = 0
        for digest in digests:
            sent = self._push_object(digest)
            uploaded += sent is not None
            size += sent or 0
        return uploaded, size

    def push(self, record: ActionRecord) -> None:
        """Upload the objects of ``record`` the remote lacks, then the record itself.

        Raises:
            CacheCorruptError: The record's output is missing or corrupt in the local cache.
            RemoteCacheError: The remote could not be reached or written.
        """
        entries = self.local.read_manifest(record.output_digest)
        objects = len({record.output_digest, *(e.digest for e in entries)})
        uploaded, size = self.push_tree(record.output_digest)
        record_path = self._store.action_path(record.key)
        wrote_record = self._store.size(record_path) is None
        if wrote_record:  # same key, same outputs: a concurrent pusher's record is as good
            self._store.upload_bytes(record.model_dump_json().encode(), record_path)
        logger.info(
            "pushed %s/%s (action %s) to %s: %d of %d objects uploaded (%s)%s",
            record.recipe,
            record.stage_id,
            record.key[:12],
            self.url,
            uploaded,
            objects,
            _fmt_bytes(size),
            "" if wrote_record else ", record already there",
        )

    def verify(self) -> list[str]:
        """Re-hash every remote object and check every remote record; empty means healthy.

        Objects are streamed, never held in memory. Temporary files are ignored.
        """
        from edgepipe.cache.remote_verify import verify_remote

        return verify_remote(self._store)

    def _fetch_record(self, key: str) -> ActionRecord | None:
        path = self._store.action_path(key)
        data = self._store.read_bytes(path)
        if data is None:
            return None
        record, problem = parse_record(data, key)
        if problem:
            raise CacheCorruptError(
                f"remote action record {self._store.url_of(path)}: {problem}; "
                "delete it so the stage is pushed again"
            )
        return record

    def _fetch_tree(self, tree_digest: str) -> tuple[int, int]:
        # The manifest first (it says what else to fetch), then the objects we lack.
        count = size = 0
        if not self.local.has(tree_digest):
            size += self._fetch_object(tree_digest)
            count += 1
        try:
            entries = self.local.read_manifest(tree_digest)
        except CacheCorruptError as exc:
            raise CacheCorruptError(f"{exc} (pulled from {self.url})") from None
        for entry in entries:
            if not self.local.has(entry.digest):
                size += self._fetch_object(entry.digest)
                count += 1
        return count, size

    def _fetch_object(self, digest: str) -> int:
        # Download beside the local objects, hashing as it streams (a mismatch raises), then
        # install that private file as it is: it is not read a second time.
        self.local.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.local.tmp_dir / tmp_name("pull")
        try:
            size = self._store.download_verified(digest, tmp)
            self.local.adopt(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        logger.debug("pulled object %s (%s) from %s", digest, _fmt_bytes(size), self.url)
        return size

    def _push_object(self, digest: str) -> int | None:
        # Return the bytes uploaded, or None if the remote already had the object.
        local_path = self.local.object_path(digest)
        try:
            size = local_path.stat().st_size
        except FileNotFoundError:
            raise CacheCorruptError(f"object {digest} is missing from the local cache") from None
        remote_path = self._store.object_path(digest)
        if self._store.size(remote_path) == size:
            return None
        # Never spread a locally corrupted object: every other machine would have to reject it.
        if sha256_file(local_path) != digest:
            raise CacheCorruptError(
                f"local object {digest} is corrupt; run `edgepipe cache verify`, not pushed"
            )
        self._store.upload_file(local_path, remote_path)
        logger.debug("pushed object %s (%s) to %s", digest, _fmt_bytes(size), self.url)
        return size


def _fmt_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{size} B" if size < 1024 else f"{value:.1f} {unit}"
