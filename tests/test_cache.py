"""Content-addressed store, tree materialisation, action records and key documents."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import filelock
import pytest
from pydantic import ValidationError

from edgepipe.cache import ActionRecord, Cache, CacheCorruptError, ManifestEntry
from edgepipe.cache.keys import canonical_json


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "model.onnx").write_bytes(b"\x08\x07onnx-bytes" * 100)
    (root / "sub" / "config.json").write_text('{"opset": 18}')
    (root / "sub" / "deeper" / "labels.txt").write_text("cat\ndog\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub" / "config.json").chmod(0o644)
    (root / "model.onnx").chmod(0o644)
    (root / "sub" / "deeper" / "labels.txt").chmod(0o644)
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def record_for(cache: Cache, tree: str, key: str = "ab" * 32) -> ActionRecord:
    return ActionRecord(
        key=key,
        recipe="demo",
        stage_id="onnx",
        stage_type="export",
        key_document={"stage_type": "export", "spec": {"opset": 18}},
        output_digest=tree,
        output_kind="onnx",
        output_size=cache.tree_size(tree),
        log="exported\n",
        seconds=1.5,
    )


def test_nothing_is_created_before_the_first_write(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    assert cache.root == tmp_path / "cache"
    assert cache.get_action("00" * 32) is None
    assert cache.last_key_document("demo", "onnx") is None
    assert cache.info()["objects"] == 0
    assert not cache.root.exists()


def test_put_file_stores_read_only_object_once(cache: Cache, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01" * 5000)
    digest = cache.put_file(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert cache.has(digest)
    obj = cache.object_path(digest)
    assert obj == cache.root / "cas" / digest[:2] / digest[2:]
    assert obj.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    assert cache.put_file(source) == digest
    assert cache.info()["objects"] == 1
    assert list((cache.root / "tmp").iterdir()) == []


def test_tree_roundtrip_with_nested_dirs_and_exec_bit(cache: Cache, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "out")
    tree = cache.put_tree(source)
    entries = cache.read_manifest(tree)
    assert [e.path for e in entries] == [
        "model.onnx",
        "run.sh",
        "sub/config.json",
        "sub/deeper/labels.txt",
    ]
    assert cache.tree_size(tree) == sum(len(b) for b in files_of(source).values())
    dest = tmp_path / "materialised" / "onnx"
    cache.materialize_tree(tree, dest)
    assert files_of(dest) == files_of(source)
    assert os.access(dest / "run.sh", os.X_OK)
    assert not (dest / "model.onnx").stat().st_mode & stat.S_IXUSR
    assert sorted(p.name for p in dest.parent.iterdir()) == ["onnx"]  # no staging leftovers


def test_tree_digest_is_content_only(cache: Cache, tmp_path: Path) -> None:
    first = cache.put_tree(make_tree(tmp_path / "a"))
    assert cache.put_tree(make_tree(tmp_path / "b")) == first
    (tmp_path / "b" / "sub" / "config.json").write_text('{"opset": 17}')
    assert cache.put_tree(tmp_path / "b") != first


def test_tree_digest_golden(cache: Cache, tmp_path: Path) -> None:
    # GOLDEN: tree digests feed downstream action keys; changing the manifest format changes
    # this value and invalidates every user's cache.
    root = tmp_path / "golden"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "b.bin").write_bytes(b"\x00\xff")
    (root / "a.txt").chmod(0o644)
    (root / "sub" / "b.bin").chmod(0o755)
    tree = cache.put_tree(root)
    hello, ff = hashlib.sha256(b"hello\n").hexdigest(), hashlib.sha256(b"\x00\xff").hexdigest()
    manifest = (
        f'{{"entries":[{{"digest":"{hello}","executable":false,"path":"a.txt","size":6}},'
        f'{{"digest":"{ff}","executable":true,"path":"sub/b.bin","size":2}}]}}'
    )
    assert cache.object_path(tree).read_bytes() == manifest.encode()
    assert tree == "bb4bf6864e5746a676c5230c7ba3784e683d2eddff923a07d11944da4897c4b7"


def test_empty_directory_roundtrip(cache: Cache, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tree = cache.put_tree(tmp_path / "empty")
    assert cache.read_manifest(tree) == []
    assert cache.object_path(tree).read_bytes() == canonical_json({"entries": []})
    cache.materialize_tree(tree, tmp_path / "dest")
    assert (tmp_path / "dest").is_dir()
    assert list((tmp_path / "dest").iterdir()) == []


def test_materialize_uses_hard_links(cache: Cache, tmp_path: Path) -> None:
    tree = cache.put_tree(make_tree(tmp_path / "out"))
    cache.materialize_tree(tree, tmp_path / "dest")
    entry = next(e for e in cache.read_manifest(tree) if e.path == "model.onnx")
    linked = (tmp_path / "dest" / "model.onnx").stat()
    assert linked.st_ino == cache.object_path(entry.digest).stat().st_ino
    assert linked.st_nlink >= 2


def test_rematerialize_replaces_stale_files(cache: Cache, tmp_path: Path) -> None:
    tree = cache.put_tree(make_tree(tmp_path / "out"))
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "stale.txt").write_text("from an older run")
    (dest / "sub" / "config.json").write_text("old")
    cache.materialize_tree(tree, dest)
    assert files_of(dest) == files_of(tmp_path / "out")
    cache.materialize_tree(tree, dest)  # over its own read-only hard links
    assert files_of(dest) == files_of(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "dest", "out"]


def test_put_tree_rejects_symlinks(cache: Cache, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "out")
    (root / "sub" / "link").symlink_to(root / "model.onnx")
    with pytest.raises(ValueError, match="symlink"):
        cache.put_tree(root)
    with pytest.raises(NotADirectoryError):
        cache.put_tree(root / "model.onnx")


def test_workdir_files_are_linked_into_the_store(cache: Cache) -> None:
    workdir = cache.new_workdir("onnx")
    assert workdir.parent == cache.root / "tmp"
    (workdir / "model.onnx").write_bytes(b"exported")
    tree = cache.put_tree(workdir)
    (entry,) = cache.read_manifest(tree)
    assert (workdir / "model.onnx").stat().st_ino == cache.object_path(entry.digest).stat().st_ino
    assert cache.object_path(entry.digest).read_bytes() == b"exported"
    assert cache.new_workdir("onnx") != workdir


@pytest.mark.parametrize("bad", ["../" + "a" * 61, "AB" * 32, "ab" * 31, "ab" * 32 + "\n"])
def test_malformed_digests_are_rejected(cache: Cache, bad: str) -> None:
    with pytest.raises(ValueError):
        cache.object_path(bad)
    with pytest.raises(ValueError):
        cache.get_action(bad)


@pytest.mark.parametrize("path", ["../evil", "/etc/evil", "a/../../evil", "a//b", "./a"])
def test_manifest_paths_cannot_escape(cache: Cache, tmp_path: Path, path: str) -> None:
    blob = tmp_path / "manifest.json"
    entry = {"path": path, "digest": "ab" * 32, "size": 1, "executable": False}
    blob.write_bytes(canonical_json({"entries": [entry]}))
    tree = cache.put_file(blob)
    with pytest.raises(CacheCorruptError, match="not a valid manifest"):
        cache.materialize_tree(tree, tmp_path / "dest" / "inner")
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []
    with pytest.raises(ValidationError):
        ManifestEntry(path=path, digest="ab" * 32, size=1, executable=False)


def test_materialize_missing_object_fails_cleanly(cache: Cache, tmp_path: Path) -> None:
    tree = cache.put_tree(make_tree(tmp_path / "out"))
    cache.object_path(cache.read_manifest(tree)[0].digest).unlink()
    with pytest.raises(CacheCorruptError, match="missing"):
        cache.materialize_tree(tree, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("dest")] == []


def test_action_roundtrip(cache: Cache, tmp_path: Path) -> None:
    tree = cache.put_tree(make_tree(tmp_path / "out"))
    record = record_for(cache, tree)
    cache.put_action(record)
    assert cache.get_action(record.key) == record
    assert list(cache.iter_actions()) == [record]
    assert cache.get_action("cd" * 32) is None
    stored = json.loads((cache.root / "ac" / "ab" / f"{'ab' * 31}.json").read_text())
    assert stored["created"].endswith("+00:00")


def test_get_action_refreshes_last_used_time(cache: Cache, tmp_path: Path) -> None:
    record = record_for(cache, cache.put_tree(make_tree(tmp_path / "out")))
    cache.put_action(record)
    path = cache.action_path(record.key)
    os.utime(path, (1_000_000, 1_000_000))
    assert cache.get_action(record.key) is not None
    assert path.stat().st_mtime > 1_000_000


def test_get_action_misses_when_an_object_is_gone(cache: Cache, tmp_path: Path) -> None:
    tree = cache.put_tree(make_tree(tmp_path / "out"))
    record = record_for(cache, tree)
    cache.put_action(record)
    cache.object_path(cache.read_manifest(tree)[-1].digest).unlink()
    assert cache.get_action(record.key) is None
    cache.put_action(record_for(cache, cache.put_tree(tmp_path / "out")))
    assert cache.get_action(record.key) is not None  # storing the output again heals it
    cache.object_path(tree).unlink()  # the manifest itself
    assert cache.get_action(record.key) is None


def test_unreadable_action_record_is_a_miss(cache: Cache, tmp_path: Path) -> None:
    record = record_for(cache, cache.put_tree(make_tree(tmp_path / "out")))
    cache.put_action(record)
    cache.action_path(record.key).write_text('{"key": "truncated')
    assert cache.get_action(record.key) is None
    assert list(cache.iter_actions()) == []


def test_action_record_validates_digests() -> None:
    with pytest.raises(ValidationError):
        ActionRecord(
            key="not-a-digest",
            recipe="r",
            stage_id="s",
            stage_type="export",
            key_document={},
            output_digest="ab" * 32,
            output_kind="onnx",
            output_size=0,
        )


def test_key_documents(cache: Cache) -> None:
    assert cache.last_key_document("eva02-large-trt", "onnx") is None
    document = {"stage_type": "export", "spec": {"opset": 18}, "label": "café"}
    cache.record_key_document("eva02-large-trt", "onnx", document)
    assert cache.last_key_document("eva02-large-trt", "onnx") == document
    cache.record_key_document("eva02-large-trt", "onnx", {"spec": {"opset": 17}})
    assert cache.last_key_document("eva02-large-trt", "onnx") == {"spec": {"opset": 17}}
    assert (cache.root / "index" / "eva02-large-trt" / "onnx.json").is_file()


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "", "sp ace", "ü"])
def test_unsafe_names_are_rejected(cache: Cache, name: str) -> None:
    with pytest.raises(ValueError):
        cache.record_key_document(name, "onnx", {})
    with pytest.raises(ValueError):
        cache.last_key_document("recipe", name)
    with pytest.raises(ValueError):
        cache.lock(name)
    with pytest.raises(ValueError):
        cache.new_workdir(name)


def test_lock_excludes_other_holders(cache: Cache) -> None:
    with cache.lock("demo.run"), pytest.raises(filelock.Timeout):
        cache.lock("demo.run", timeout=0).acquire()
    with cache.lock("demo.run", timeout=0):
        pass
    assert (cache.root / "locks" / "demo.run.lock").exists()
