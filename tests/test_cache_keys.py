"""Canonical JSON and action keys: the encoding is part of the on-disk cache format."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from edgepipe.cache import action_key, canonical_json, default_cache_dir

EXPORT_DOCUMENT = {
    "stage_type": "export",
    "implementation_version": 1,
    "spec": {"opset": 18, "dynamic_batch": True},
    "inputs": {"0": "ab" * 32},
    "tools": {"torch": "2.14.1"},
}
TRT_DOCUMENT = {
    "stage_type": "build-trt-cache",
    "implementation_version": 2,
    "spec": {"fp16": True, "workspace_gib": 4.5, "profile": [1, 8, 32]},
    "inputs": {"0": "cd" * 32},
    "tools": {"tensorrt": "10.9.0", "cuda": "12.8", "gpu": "NVIDIA H100 80GB HBM3", "driver": None},
}
UNICODE_DOCUMENT = {
    "stage_type": "compose-preprocessing",
    "implementation_version": 1,
    "spec": {
        "image": {"layout": "NHWC", "dtype": "uint8", "channels": "RGB"},
        "mean": [0.485, 0.456, 0.406],
        "label": "café ✓",
    },
    "inputs": {},
    "tools": {},
}


# GOLDEN VALUES. Changing any of these literals (or making a change that breaks these tests)
# changes every action key, which invalidates every user's cache: every stage of every recipe
# reruns. Only do it on purpose, together with a note in the changelog.
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (EXPORT_DOCUMENT, "270ef3511d04dc8a59a33c06b42d31d1895fefc3323a1480defd95ac85241df7"),
        (TRT_DOCUMENT, "3e5d55a55773b4437729ef74639ebe752a70ca0f52429e2b2810d9dce018c929"),
        (UNICODE_DOCUMENT, "8b1afb758507fe136d885fb8b3473feca940b339203312db343faa275b0e077b"),
    ],
    ids=["export", "trt", "unicode"],
)
def test_action_key_golden(document: dict, expected: str) -> None:
    assert action_key(document) == expected


def test_canonical_json_golden_bytes() -> None:
    # Same warning as above: these bytes are what gets hashed into keys.
    assert canonical_json(EXPORT_DOCUMENT) == (
        b'{"implementation_version":1,"inputs":{"0":"' + b"ab" * 32 + b'"},'
        b'"spec":{"dynamic_batch":true,"opset":18},"stage_type":"export",'
        b'"tools":{"torch":"2.14.1"}}'
    )
    expected = hashlib.sha256(canonical_json(EXPORT_DOCUMENT)).hexdigest()
    assert action_key(EXPORT_DOCUMENT) == expected


def test_key_independent_of_insertion_order() -> None:
    reordered = dict(reversed(list(EXPORT_DOCUMENT.items())))
    reordered["spec"] = {"dynamic_batch": True, "opset": 18}
    assert action_key(reordered) == action_key(EXPORT_DOCUMENT)


def test_canonical_json_sorts_nested_keys_without_whitespace() -> None:
    assert canonical_json({"b": 1, "a": {"d": [3, {"z": 0, "y": 1}], "c": None}}) == (
        b'{"a":{"c":null,"d":[3,{"y":1,"z":0}]},"b":1}'
    )


def test_canonical_json_keeps_unicode_as_utf8() -> None:
    assert canonical_json({"name": "café ✓"}) == '{"name":"café ✓"}'.encode()


def test_key_distinguishes_value_types() -> None:
    keys = {action_key({"v": value}) for value in (1, 1.0, True, "1", [1], None)}
    assert len(keys) == 6


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"threshold": value})


@pytest.mark.parametrize("value", [Path("model.onnx"), {1, 2}, b"bytes", object()])
def test_canonical_json_rejects_non_json_values(value: object) -> None:
    with pytest.raises(TypeError, match="not allowed in a cache key document"):
        canonical_json({"weights": value})


def test_action_key_requires_a_dict() -> None:
    with pytest.raises(TypeError):
        action_key([1, 2])  # type: ignore[arg-type]


def test_default_cache_dir_honours_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("EDGEPIPE_CACHE")
    assert default_cache_dir().name == "edgepipe"


def test_factory_sources_are_found_in_packages_of_every_kind(tmp_path: Path) -> None:
    from edgepipe.models.module_sources import module_source_files

    (tmp_path / "regular").mkdir()
    (tmp_path / "regular" / "__init__.py").write_text("")
    (tmp_path / "regular" / "net.py").write_text("def build(): ...\n")
    (tmp_path / "namespace" / "layers").mkdir(parents=True)  # no __init__.py anywhere
    (tmp_path / "namespace" / "net.py").write_text("def build(): ...\n")
    (tmp_path / "namespace" / "layers" / "block.py").write_text("X = 1\n")
    (tmp_path / "single.py").write_text("def build(): ...\n")

    def names(module: str) -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in module_source_files(module, tmp_path)]

    assert names("regular.net") == ["regular/__init__.py", "regular/net.py"]
    assert names("namespace.net") == ["namespace/layers/block.py", "namespace/net.py"]
    assert names("single") == ["single.py"]
    assert module_source_files("pydantic", tmp_path) == []  # installed: keyed by its version
