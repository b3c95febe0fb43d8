"""The cache never hands out bytes that do not match their digest, and heals by rebuilding.

Corruption here is real: one byte of a stored object flipped in place (as bit rot, a stray
editor on a hard-linked output or a bad copy would do), the way the fault campaign found it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from conftest import outcomes, vit_chain_recipe

from edgepipe.cache import ActionRecord, Cache
from edgepipe.cache.digest import StatCache, sha256_file


def flip_byte(path: Path, offset: int = -1) -> None:
    """Flip one byte in place (same size, same inode), as a read-only object is corrupted."""
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    with open(path, "r+b") as stream:
        stream.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        byte = stream.read(1)
        stream.seek(-1, os.SEEK_CUR)
        stream.write(bytes([byte[0] ^ 0xFF]))


class CountingStatCache(StatCache):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hashed: list[str] = []

    def _hash(self, path: Path) -> str:
        self.hashed.append(Path(path).name)
        return super()._hash(path)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def stored(cache: Cache, root: Path, key: str = "ab" * 32) -> ActionRecord:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(os.urandom(50_000))
    (root / "artifact.json").write_text('{"kind": "onnx-model"}')
    tree = cache.put_tree(root)
    record = ActionRecord(
        key=key,
        recipe="demo",
        stage_id="onnx",
        stage_type="export",
        key_document={},
        output_digest=tree,
        output_kind="onnx-model",
        output_size=cache.tree_size(tree),
        log="",
        seconds=0.1,
    )
    cache.put_action(record)
    return record


def model_object(cache: Cache, record: ActionRecord) -> Path:
    entry = next(e for e in cache.read_manifest(record.output_digest) if e.path == "model.onnx")
    return cache.object_path(entry.digest)


def test_a_flipped_byte_is_a_miss_and_the_object_is_removed(cache: Cache, tmp_path: Path):
    record = stored(cache, tmp_path / "out")
    assert cache.get_action(record.key) == record
    obj = model_object(cache, record)
    flip_byte(obj)
    assert cache.get_action(record.key) is None
    assert not obj.exists()
    assert "model.onnx" in cache.damaged[record.key]
    assert "corrupt" in cache.damaged[record.key]


def test_an_object_is_rehashed_only_when_its_signature_moved(cache: Cache, tmp_path: Path):
    record = stored(cache, tmp_path / "out")
    counting = CountingStatCache(cache.root)
    cache._stat_cache = counting
    assert cache.get_action(record.key) is not None
    assert counting.hashed == []  # signatures remembered at install are trusted
    obj = model_object(cache, record)
    os.utime(obj, ns=(obj.stat().st_atime_ns, obj.stat().st_mtime_ns + 1))
    assert cache.get_action(record.key) is not None  # touched, same bytes: re-hashed, sound
    assert counting.hashed == [obj.name]
    assert cache.get_action(record.key) is not None
    assert counting.hashed == [obj.name]  # and remembered again


def test_a_corrupt_object_without_a_remembered_signature_is_caught(cache, tmp_path: Path):
    # A cache written before signatures existed (or whose statcache.sqlite was lost).
    record = stored(cache, tmp_path / "out")
    cache.close()
    (cache.root / "statcache.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (cache.root / f"statcache.sqlite{suffix}").unlink(missing_ok=True)
    flip_byte(model_object(cache, record), offset=10)
    assert Cache(cache.root).get_action(record.key) is None


def test_storing_the_same_bytes_again_replaces_a_corrupt_object(cache: Cache, tmp_path: Path):
    # What a rebuild or --force does: the stored copy is re-hashed, not trusted because it exists.
    data = os.urandom(10_000)
    (tmp_path / "a.bin").write_bytes(data)
    digest = cache.put_file(tmp_path / "a.bin")
    flip_byte(cache.object_path(digest))
    assert cache.put_file(tmp_path / "a.bin") == digest
    assert sha256_file(cache.object_path(digest)) == digest
    assert cache.verify() == []


def test_a_corrupt_manifest_is_replaced_by_the_next_store(cache: Cache, tmp_path: Path):
    record = stored(cache, tmp_path / "out")
    flip_byte(cache.object_path(record.output_digest), offset=5)
    assert cache.get_action(record.key) is None
    assert record.key in cache.damaged
    assert cache.put_tree(tmp_path / "out") == record.output_digest
    assert cache.get_action(record.key) == record
    assert cache.verify() == []


RECIPE = vit_chain_recipe("heal", last="onnx")


def digest_of(folder: Path) -> str:
    return hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
    ).hexdigest()


@pytest.mark.slow
def test_a_run_rebuilds_a_corrupt_object_with_a_warning(workspace):
    recipe = workspace.recipe(RECIPE)
    assert workspace.cli("run", str(recipe)).returncode == 0
    clean = digest_of(workspace.out / "onnx")
    model = workspace.out / "onnx" / "model.onnx"
    # The output is a hard link to the stored object: corrupting one corrupts the other.
    flip_byte(model, offset=100)
    assert workspace.cli("cache", "verify").returncode == 5

    rerun = workspace.cli("run", str(recipe))
    assert rerun.returncode == 0, rerun.stderr
    assert outcomes(rerun.stderr) == {"model": "cached", "onnx": "built"}
    assert "cached output was corrupt" in rerun.stderr
    assert "model.onnx" in rerun.stderr
    assert digest_of(workspace.out / "onnx") == clean
    assert workspace.cli("cache", "verify").returncode == 0

    again = workspace.cli("run", str(recipe))
    assert outcomes(again.stderr) == {"model": "cached", "onnx": "cached"}
    assert "was corrupt" not in again.stderr
