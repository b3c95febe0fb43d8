"""RemoteCache over real fsspec filesystems: a shared folder (file://) and S3 (a moto server)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgepipe.cache import ActionRecord, Cache, CacheCorruptError
from edgepipe.cache.remote import REMOTE_OPTIONS_ENV, RemoteCache, RemoteCacheError

REPO = Path(__file__).resolve().parent.parent
FILES = {
    "model.onnx": os.urandom(300_000),
    "artifact.json": b'{"kind": "onnx"}\n',
    "weights/part-0.bin": os.urandom(2_000),
    "weights/empty.bin": b"",
    "bin/run.sh": b"#!/bin/sh\necho hi\n",
}


def build_action(cache: Cache, tag: str = "a") -> ActionRecord:
    """Store a small output tree in ``cache`` as a stage would and record its action."""
    out = cache.new_workdir("stage") / "out"
    for name, data in FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    (out / "bin/run.sh").chmod(0o755)
    digest = cache.put_tree(out)
    record = ActionRecord(
        key=hashlib.sha256(f"action-{tag}".encode()).hexdigest(),
        recipe="demo",
        stage_id="export",
        stage_type="export",
        key_document={"type": "export", "tag": tag},
        output_digest=digest,
        output_kind="onnx",
        output_size=cache.tree_size(digest),
        log="built",
    )
    cache.put_action(record)
    return record


def assert_materialises(cache: Cache, record: ActionRecord, dest: Path) -> None:
    cache.materialize_tree(record.output_digest, dest)
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert found == FILES
    assert os.access(dest / "bin/run.sh", os.X_OK)


def remote_object(remote: RemoteCache, digest: str) -> str:
    return remote._store.object_path(digest)


def digest_of(record: ActionRecord, cache: Cache, path: str) -> str:
    return next(e.digest for e in cache.read_manifest(record.output_digest) if e.path == path)


# -- the round trip, run against each backend ---------------------------------------------------

RemoteFactory = Callable[[Cache], RemoteCache]


def round_trip(tmp_path: Path, make_remote: RemoteFactory) -> None:
    a = Cache(tmp_path / "a")
    record = build_action(a)
    remote_a = make_remote(a)
    assert not remote_a.has_action(record.key)
    remote_a.push(record)
    assert remote_a.has_action(record.key)
    assert remote_a.verify() == []

    b = Cache(tmp_path / "b")
    remote_b = make_remote(b)
    assert b.get_action(record.key) is None
    pulled = remote_b.pull(record.key)
    assert pulled == record
    assert b.get_action(record.key) == record
    assert_materialises(b, record, tmp_path / "out-b")
    assert b.verify() == []
    assert remote_b.pull(hashlib.sha256(b"unknown").hexdigest()) is None

    # Corrupt one remote object: a fresh cache must refuse it and stay clean.
    bad = digest_of(record, a, "weights/part-0.bin")
    remote_a._store.fs.pipe_file(remote_object(remote_a, bad), b"tampered")
    problems = remote_a.verify()
    assert any(bad in p and "corrupt" in p for p in problems), problems
    assert any(record.key in p and "weights/part-0.bin" in p for p in problems), problems
    c = Cache(tmp_path / "c")
    with pytest.raises(CacheCorruptError) as caught:
        make_remote(c).pull(record.key)
    assert bad in str(caught.value)
    assert remote_a._store.url_of(remote_object(remote_a, bad)) in str(caught.value)
    assert c.verify() == []
    assert c.get_action(record.key) is None
    assert not c.has(bad)
    assert list(c.tmp_dir.iterdir()) == []


def concurrent_pushes(tmp_path: Path, make_remote: RemoteFactory) -> None:
    caches = [Cache(tmp_path / f"p{i}") for i in range(6)]
    records = [build_action(cache, tag="same") for cache in caches]
    start = threading.Barrier(len(caches))

    def push(cache: Cache, record: ActionRecord) -> None:
        remote = make_remote(cache)
        start.wait()  # all pushers find the remote empty and upload at the same time
        remote.push(record)

    with ThreadPoolExecutor(len(caches)) as pool:
        list(pool.map(push, caches, records))
    remote = make_remote(Cache(tmp_path / "reader"))
    assert remote.verify() == []
    assert remote.pull(records[0].key).output_digest == records[0].output_digest
    assert_materialises(remote.local, records[0], tmp_path / "out-reader")


# -- file:// -----------------------------------------------------------------------------------


@pytest.fixture
def file_remote(tmp_path: Path) -> RemoteFactory:
    url = (tmp_path / "remote").as_uri()
    return lambda cache: RemoteCache(url, cache)


def test_file_round_trip_and_corruption(tmp_path: Path, file_remote: RemoteFactory) -> None:
    round_trip(tmp_path, file_remote)


def test_file_concurrent_pushes_leave_a_clean_remote(
    tmp_path: Path, file_remote: RemoteFactory
) -> None:
    concurrent_pushes(tmp_path, file_remote)
    leftovers = list((tmp_path / "remote" / "tmp").iterdir())
    assert leftovers == [], "every temporary upload was renamed into place"


def test_pull_is_a_local_hit_without_touching_the_remote(tmp_path: Path) -> None:
    local = Cache(tmp_path / "local")
    record = build_action(local)
    remote = RemoteCache((tmp_path / "never-created").as_uri(), local)
    assert remote.pull(record.key) == record
    assert not (tmp_path / "never-created").exists()


def test_remote_missing_object_is_a_miss_and_push_repairs_it(
    tmp_path: Path, file_remote: RemoteFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = Cache(tmp_path / "a")
    record = build_action(a)
    remote_a = file_remote(a)
    remote_a.push(record)
    gone = digest_of(record, a, "model.onnx")
    remote_a._store.fs.rm_file(remote_object(remote_a, gone))
    assert any("is missing" in p for p in remote_a.verify())

    b = Cache(tmp_path / "b")
    with caplog.at_level(logging.WARNING, logger="edgepipe.cache.remote"):
        assert file_remote(b).pull(record.key) is None
    assert "missing" in caplog.text
    assert b.get_action(record.key) is None

    with caplog.at_level(logging.INFO, logger="edgepipe.cache.remote"):
        remote_a.push(record)  # re-uploads only what is missing
    assert "1 of 6 objects uploaded" in caplog.text
    assert remote_a.verify() == []
    assert file_remote(b).pull(record.key) == record


def test_record_is_pushed_only_after_every_object(
    tmp_path: Path, file_remote: RemoteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = Cache(tmp_path / "a")
    record = build_action(a)
    remote = file_remote(a)
    real_upload = remote._store.upload_file
    calls: list[str] = []

    def flaky_upload(local: Path, path: str) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise RemoteCacheError("connection reset")
        real_upload(local, path)

    monkeypatch.setattr(remote._store, "upload_file", flaky_upload)
    with pytest.raises(RemoteCacheError):
        remote.push(record)
    assert not remote.has_action(record.key)
    monkeypatch.undo()
    remote.push(record)
    assert remote.has_action(record.key) and remote.verify() == []


def test_corrupt_remote_record_is_reported(tmp_path: Path, file_remote: RemoteFactory) -> None:
    a = Cache(tmp_path / "a")
    record = build_action(a)
    remote = file_remote(a)
    remote.push(record)
    remote._store.fs.pipe_file(remote._store.action_path(record.key), b"{not json")
    assert any("not a valid action record" in p for p in remote.verify())
    b = Cache(tmp_path / "b")
    with pytest.raises(CacheCorruptError, match="remote action record"):
        file_remote(b).pull(record.key)
    assert b.verify() == [] and b.get_action(record.key) is None


def test_bad_options_say_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REMOTE_OPTIONS_ENV, "endpoint_url=http://x")
    with pytest.raises(RemoteCacheError, match=REMOTE_OPTIONS_ENV):
        RemoteCache((tmp_path / "r").as_uri(), Cache(tmp_path / "c"))
    monkeypatch.delenv(REMOTE_OPTIONS_ENV)
    with pytest.raises(RemoteCacheError, match="nosuchproto"):
        RemoteCache("nosuchproto://bucket/x", Cache(tmp_path / "c"))


def test_local_only_use_does_not_import_fsspec() -> None:
    code = (
        "import sys, edgepipe.cache, edgepipe.cache.remote, edgepipe.cache.remote_verify; "
        "assert 'fsspec' not in sys.modules, 'fsspec was imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- S3, against a moto server on loopback ------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install s3fs)")
    server_mod = pytest.importorskip(
        "moto.server", reason="moto's server is not installed (pip install 'moto[server]')"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", REMOTE_OPTIONS_ENV):
            patch.delenv(name, raising=False)
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_remote(s3_endpoint: str, request: pytest.FixtureRequest) -> RemoteFactory:
    import s3fs

    bucket = f"edgepipe-{request.node.name.replace('_', '-')[:40].lower()}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(bucket)
    return lambda cache: RemoteCache(
        f"s3://{bucket}/cache/v1", cache, storage_options={"endpoint_url": s3_endpoint}
    )


def test_s3_round_trip_and_corruption(tmp_path: Path, s3_remote: RemoteFactory) -> None:
    round_trip(tmp_path, s3_remote)


def test_s3_concurrent_pushes(tmp_path: Path, s3_remote: RemoteFactory) -> None:
    concurrent_pushes(tmp_path, s3_remote)


def test_s3_endpoint_from_environment(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir("edgepipe-env")
    monkeypatch.setenv(REMOTE_OPTIONS_ENV, f'{{"endpoint_url": "{s3_endpoint}"}}')
    a = Cache(tmp_path / "a")
    record = build_action(a)
    RemoteCache("s3://edgepipe-env", a).push(record)
    b = Cache(tmp_path / "b")
    assert RemoteCache("s3://edgepipe-env", b).pull(record.key) == record
    assert_materialises(b, record, tmp_path / "out")
