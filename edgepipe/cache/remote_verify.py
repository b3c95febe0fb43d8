"""Integrity check of a remote cache: the remote counterpart of ``Cache.verify``."""

from __future__ import annotations

__all__ = ["verify_remote"]


from edgepipe.cache._tree import parse_manifest
from edgepipe.cache.digest import is_digest
from edgepipe.cache.models import CacheCorruptError, parse_record
from edgepipe.cache.remote_store import RemoteStore


def verify_remote(store: RemoteStore) -> list[str]:
    """Re-hash every object (streaming) and check every record; return one line per problem.

    A record is reported when its manifest or one of its files is missing or corrupt.
    """
    problems: list[str] = []
    objects, healthy = _verify_objects(store, problems)
    prefix = f"{store.root}/ac/"
    for path in sorted(store.list_files(prefix.rstrip("/"))):
        parts = path.removeprefix(prefix).split("/")
        key = "".join(parts).removesuffix(".json")
        if len(parts) != 2 or not parts[1].endswith(".json") or not is_digest(key):
            problems.append(f"{store.url_of(path)}: unexpected entry among the action records")
            continue
        problems.extend(_verify_record(store, path, key, objects, healthy))
    return problems


def _verify_objects(store: RemoteStore, problems: list[str]) -> tuple[set[str], set[str]]:
    # (every object name present, those whose content matches their name)
    prefix = f"{store.root}/cas/"
    present: set[str] = set()
    healthy: set[str] = set()
    for path in sorted(store.list_files(prefix.rstrip("/"))):
        parts = path.removeprefix(prefix).split("/")
        name = "".join(parts)
        if len(parts) != 2 or not is_digest(name):
            problems.append(f"{store.url_of(path)}: unexpected entry in the remote object store")
            continue
        try:
            actual = store.hash_file(path)
        except FileNotFoundError:
            continue  # deleted since it was listed
        present.add(name)
        if actual == name:
            healthy.add(name)
        else:
            problems.append(
                f"object {name} ({store.url_of(path)}): content hashes to {actual}; "
                "the object is corrupt"
            )
    return present, healthy


def _verify_record(
    store: RemoteStore, path: str, key: str, objects: set[str], healthy: set[str]
) -> list[str]:
    where = store.url_of(path)
    data = store.read_bytes(path)
    if data is None:
        return []  # deleted since it was listed
    record, problem = parse_record(data, key)
    if problem:
        return [f"action record {where}: {problem}"]
    label = f"action {key} ({record.recipe}/{record.stage_id})"
    tree = record.output_digest
    if tree not in objects:
        return [f"{label}: manifest {tree} is missing"]
    if tree not in healthy:
        return [f"{label}: manifest {tree} is corrupt"]
    manifest = store.read_bytes(store.object_path(tree))
    if manifest is None:
        return [f"{label}: manifest {tree} is missing"]
    try:
        entries = parse_manifest(manifest, tree)
    except CacheCorruptError as exc:
        return [f"{label}: {exc}"]
    problems = []
    for entry in entries:
        if entry.digest not in objects:
            problems.append(f"{label}: output file {entry.path} (object {entry.digest}) is missing")
        elif entry.digest not in healthy:
            problems.append(f"{label}: output file {entry.path} (object {entry.digest}) is corrupt")
    return problems
