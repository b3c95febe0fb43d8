"""Action cache (action key -> ActionRecord) and the last key document of each stage."""

from __future__ import annotations

__all__ = ["ActionCache", "ActionScan"]

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.cache._layout import check_name
from edgepipe.cache.cas import ContentStore
from edgepipe.cache.digest import check_digest, is_digest
from edgepipe.cache.keys import canonical_json
from edgepipe.cache.models import ActionRecord, CacheCorruptError, parse_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionScan:
    """One action record file found on disk: its record, or why it could not be read."""

    path: Path
    record: ActionRecord | None
    error: str | None
    mtime_ns: int


class ActionCache(ContentStore):
    """Action records at ``ac/<2 hex>/<62 hex>.json``; a record's mtime is its last use."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # action key -> why its stored output was corrupt (found and removed this session)
        self.damaged: dict[str, str] = {}

    def action_path(self, key: str) -> Path:
        """Return where the record for ``key`` is stored.

        Raises:
            ValueError: ``key`` is not a sha256 hex digest.
        """
        check_digest(key)
        return self.ac_dir / key[:2] / f"{key[2:]}.json"

    def get_action(self, key: str) -> ActionRecord | None:
        """Return the record for ``key`` if it and its whole output tree are stored, else None."""
        path = self.action_path(key)
        try:
            record, error = _load_record(path, key)
        except FileNotFoundError:
            return None
        if record is None:
            logger.warning("ignoring unreadable action record %s: %s", path, error)
            return None
        problem = self.tree_problem(record.output_digest)
        if problem is not None:
            if record.output_digest in self.corrupt or problem.endswith("is corrupt"):
                self.damaged[key] = problem
            logger.info("action %s (%s): %s; treating as a miss", key, record.stage_id, problem)
            return None
        # Last-used time, read by gc. OSError: evicted concurrently or not ours to touch; the
        # hit itself is still valid.
        with contextlib.suppress(OSError):
            os.utime(path)
        return record

    def put_action(self, record: ActionRecord) -> None:
        """Store (or replace) the record for ``record.key`` atomically."""
        self.atomic_write(self.action_path(record.key), record.model_dump_json().encode())

    def iter_actions(self) -> Iterator[ActionRecord]:
        """Yield every readable action record (unreadable ones are logged and skipped)."""
        for scan in self.scan_actions():
            if scan.record is not None:
                yield scan.record
            else:
                logger.warning("skipping unreadable action record %s: %s", scan.path, scan.error)

    def scan_actions(self) -> Iterator[ActionScan]:
        """Yield every action record file with its parsed record or the reason it is unreadable."""
        for path in sorted(self.ac_dir.glob("*/*.json")):
            key = path.parent.name + path.name.removesuffix(".json")
            try:
                mtime_ns = path.stat().st_mtime_ns
                record, error = _load_record(path, key)
            except FileNotFoundError:
                continue  # removed by a concurrent gc
            yield ActionScan(path, record, error, mtime_ns)

    def tree_complete(self, tree_digest: str) -> bool:
        """Return whether a tree's manifest and every object it lists are stored and intact."""
        return self.tree_problem(tree_digest) is None

    def tree_problem(self, tree_digest: str) -> str | None:
        """Why a stored tree cannot be served (missing or corrupt parts), or None if it can.

        Objects are checked with :meth:`intact`; corrupt ones are removed and noted in
        :attr:`corrupt`.
        """
        try:
            entries = self.read_manifest(tree_digest)
        except CacheCorruptError as exc:
            return str(exc)
        for entry in entries:
            if not self.intact(entry.digest):
                state = "corrupt" if entry.digest in self.corrupt else "missing"
                return f"output file {entry.path} (object {entry.digest[:12]}…) is {state}"
        return None

    def last_key_document(self, recipe: str, stage_id: str) -> dict[str, Any] | None:
        """Return the key document last recorded for a stage, or None if there is none."""
        path = self._index_path(recipe, stage_id)
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            logger.warning("ignoring unreadable key document %s: %s", path, exc)
            return None
        return document if isinstance(document, dict) else None

    def record_key_document(self, recipe: str, stage_id: str, document: dict[str, Any]) -> None:
        """Remember ``document`` as the last key document of a stage (atomically).

        It only feeds ``plan``'s "why": in a read-only cache it is not written (logged).

        Raises:
            ValueError: ``recipe`` or ``stage_id`` is not a safe name.
        """
        path = self._index_path(recipe, stage_id)
        try:
            self.atomic_write(path, canonical_json(document))
        except OSError as exc:
            logger.debug("key document %s not recorded: %s", path, exc)

    def _index_path(self, recipe: str, stage_id: str) -> Path:
        check_name(recipe, "recipe name")
        check_name(stage_id, "stage id")
        return self.index_dir / recipe / f"{stage_id}.json"


def _load_record(path: Path, key: str) -> tuple[ActionRecord | None, str | None]:
    # Returns (record, None) or (None, reason); FileNotFoundError propagates.
    if not is_digest(key):
        return None, f"{path.name} is not named after an action key"
    return parse_record(path.read_bytes(), key)
