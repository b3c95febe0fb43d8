"""verify, gc, clear, info, and several processes writing the same objects at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from edgepipe.cache import ActionRecord, Cache

HOUR = 3600.0


def age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def store_output(cache: Cache, root: Path, content: bytes, key: str) -> ActionRecord:
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(content)
    (root / "meta.json").write_text('{"kind": "onnx"}')
    tree = cache.put_tree(root)
    record = ActionRecord(
        key=key,
        recipe="demo",
        stage_id=root.name,
        stage_type="export",
        key_document={"n": root.name},
        output_digest=tree,
        output_kind="onnx",
        output_size=cache.tree_size(tree),
    )
    cache.put_action(record)
    return record


def objects_of(cache: Cache, record: ActionRecord) -> list[Path]:
    digests = [record.output_digest, *(e.digest for e in cache.read_manifest(record.output_digest))]
    return [cache.object_path(d) for d in digests]


def age_all_objects(cache: Cache, seconds: float) -> None:
    for path in (cache.root / "cas").glob("*/*"):
        age(path, seconds)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def test_verify_healthy_cache(cache: Cache, tmp_path: Path) -> None:
    assert cache.verify() == []
    store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    assert cache.verify() == []


def test_verify_detects_corrupt_object(cache: Cache, tmp_path: Path) -> None:
    record = store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    victim = cache.object_path(cache.read_manifest(record.output_digest)[0].digest)
    victim.chmod(0o644)
    victim.write_bytes(b"bit rot")
    (problem,) = cache.verify()
    assert victim.parent.name + victim.name in problem
    assert "corrupt" in problem


def test_verify_detects_missing_object_and_bad_record(cache: Cache, tmp_path: Path) -> None:
    record = store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    entry = cache.read_manifest(record.output_digest)[0]
    cache.object_path(entry.digest).unlink()
    broken = cache.action_path("bb" * 32)
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    problems = cache.verify()
    assert len(problems) == 2
    assert any(f"{entry.path} (object {entry.digest}) is missing" in p for p in problems)
    assert any(str(broken) in p and "not a valid action record" in p for p in problems)


def test_gc_keeps_referenced_and_young_objects(cache: Cache, tmp_path: Path) -> None:
    record = store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    orphan, young = tmp_path / "orphan.bin", tmp_path / "young.bin"
    orphan.write_bytes(b"nobody references me")
    young.write_bytes(b"a run is about to reference me")
    orphan_path = cache.object_path(cache.put_file(orphan))
    age_all_objects(cache, 2 * HOUR)
    young_path = cache.object_path(cache.put_file(young))
    result = cache.gc()
    assert result["objects_removed"] == 1
    assert result["bytes_freed"] == len(b"nobody references me")
    assert result["actions_removed"] == 0
    assert not orphan_path.exists()
    assert young_path.exists()
    assert all(p.exists() for p in objects_of(cache, record))
    assert cache.get_action(record.key) is not None
    assert cache.verify() == []


def test_putting_an_existing_object_protects_it_from_gc(cache: Cache, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"stored long ago, needed again now")
    path = cache.object_path(cache.put_file(blob))
    age(path, 2 * HOUR)
    cache.put_file(blob)  # a run re-stores it before writing the record that references it
    assert cache.gc()["objects_removed"] == 0
    assert path.exists()


def test_gc_removes_stale_tmp_entries_only(cache: Cache) -> None:
    tmp = cache.root / "tmp"
    tmp.mkdir(parents=True)
    stale_dir, stale_file, fresh = tmp / "killed-run", tmp / "write-leftover", tmp / "fresh"
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "half.onnx").write_bytes(b"x" * 100)
    stale_file.write_bytes(b"y" * 10)
    fresh.mkdir()
    for path in (stale_dir / "sub" / "half.onnx", stale_dir / "sub", stale_dir, stale_file):
        age(path, 2 * HOUR)
    busy = tmp / "busy-run"  # old directory, but a file inside was just written
    busy.mkdir()
    (busy / "engine.plan").write_bytes(b"z")
    age(busy, 2 * HOUR)
    ours = cache.new_workdir("long-trt-build")  # this process is alive: kept however old
    age(ours, 2 * HOUR)
    result = cache.gc()
    assert result["tmp_removed"] == 2
    assert result["bytes_freed"] == 110
    assert sorted(p.name for p in tmp.iterdir()) == sorted(["fresh", "busy-run", ours.name])


def test_gc_older_than_removes_unused_records_and_their_objects(
    cache: Cache, tmp_path: Path
) -> None:
    old = store_output(cache, tmp_path / "old", b"old" * 1000, "aa" * 32)
    new = store_output(cache, tmp_path / "new", b"new" * 1000, "bb" * 32)
    age_all_objects(cache, 3 * HOUR)
    age(cache.action_path(old.key), 48 * HOUR)
    result = cache.gc(older_than_seconds=24 * HOUR)
    assert result["actions_removed"] == 1
    assert result["objects_removed"] == 2  # the old model and the old manifest; meta is shared
    assert cache.get_action(old.key) is None
    assert cache.get_action(new.key) is not None
    assert cache.verify() == []


def test_gc_max_size_evicts_least_recently_used(cache: Cache, tmp_path: Path) -> None:
    records = [
        store_output(cache, tmp_path / f"s{i}", bytes([i]) * 10_000, f"{i:02x}" * 32)
        for i in range(3)
    ]
    age_all_objects(cache, 3 * HOUR)
    for hours, record in zip((5, 9, 1), records, strict=True):
        age(cache.action_path(record.key), hours * HOUR)
    result = cache.gc(max_size_bytes=25_000)  # room for two 10 kB models, not three
    assert result["actions_removed"] == 1
    assert cache.get_action(records[1].key) is None  # least recently used
    assert cache.get_action(records[0].key) is not None
    assert cache.get_action(records[2].key) is not None
    assert cache.gc(max_size_bytes=0)["actions_removed"] == 2
    assert cache.info()["objects"] == 0


def test_gc_drops_records_whose_output_is_gone(cache: Cache, tmp_path: Path) -> None:
    record = store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    cache.object_path(record.output_digest).unlink()
    assert cache.gc()["actions_removed"] == 1
    assert cache.info()["actions"] == 0


def test_info_and_clear(cache: Cache, tmp_path: Path) -> None:
    store_output(cache, tmp_path / "a", b"onnx" * 1000, "aa" * 32)
    cache.new_workdir("stage")
    cache.file_digest(tmp_path / "a" / "model.onnx")
    info = cache.info()
    assert info["root"] == str(cache.root)
    assert (info["objects"], info["actions"], info["tmp_entries"]) == (3, 1, 1)
    manifest_size = cache.object_path(cache.get_action("aa" * 32).output_digest).stat().st_size
    assert info["object_bytes"] == 4000 + len('{"kind": "onnx"}') + manifest_size
    cache.clear()
    assert cache.root.is_dir()
    assert list(cache.root.iterdir()) == []
    assert cache.info()["objects"] == 0


def _race(root: str, big: str, tree: str, dest: str, barrier: Any, results: Any) -> None:
    cache = Cache(Path(root))
    barrier.wait()
    file_digest = cache.put_file(Path(big))
    tree_digest = cache.put_tree(Path(tree))
    cache.materialize_tree(tree_digest, Path(dest))
    results.put((file_digest, tree_digest))


def test_concurrent_processes_store_the_same_content(cache: Cache, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 24)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / "sub" / f"f{i}.bin").write_bytes(bytes([i]) * (1000 + i))
    dest = tmp_path / "out"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    args = (str(cache.root), str(big), str(tree), str(dest), barrier, results)
    workers = [ctx.Process(target=_race, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    first, second = results.get(timeout=5), results.get(timeout=5)
    assert first == second
    assert cache.verify() == []
    assert cache.info()["objects"] == 1 + 20 + 1
    assert list((cache.root / "tmp").iterdir()) == []
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.bin")) == sorted(
        f"sub/f{i}.bin" for i in range(20)
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == ["out"]


def test_gc_sweeps_old_object_and_action_locks_only(cache: Cache) -> None:
    cache.locks_dir.mkdir(parents=True, exist_ok=True)
    digest = "ab" * 32
    names = [f"{digest}.lock", f"action-{digest}.lock", "index.lock", f"action-{'cd' * 32}.lock"]
    for name in names:
        (cache.locks_dir / name).write_text("")
    for name in names[:3]:
        age(cache.locks_dir / name, 2 * HOUR)
    cache.gc()
    # stale per-object and per-action locks go; named locks and fresh ones stay
    assert sorted(p.name for p in cache.locks_dir.iterdir()) == sorted(names[2:])
