"""Action keys: the canonical description of everything that can change a stage's output,
and a readable explanation of why two descriptions differ (what ``edgepipe plan`` prints)."""

from __future__ import annotations

__all__ = ["KEY_VERSION", "explain", "key_document"]

from typing import Any

from edgepipe.stages.base import Stage, StageSpec

KEY_VERSION = 1
"""Bump only when the *layout* of key documents changes: it invalidates every cache entry."""


def key_document(
    stage: Stage,
    spec: StageSpec,
    input_digests: list[str],
    file_digests: dict[str, str],
    tools: dict[str, str | None],
    extra: dict[str, Any] | None = None,
    toolchain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document whose sha256 is the action key.

    Upstream stages enter by the *content* digest of their output, and files by the digest of
    their bytes, so renaming a stage or moving a checkout keeps the cache valid while a re-export
    that produces identical bytes keeps everything downstream cached.
    """
    # ids and paths enter by content below; scheduling hints never change the output
    by_content = {*spec.input_fields, *spec.file_fields(), *spec.dir_fields(), "resources"}
    if toolchain:  # the spec's override is in the toolchain section, resolved: not twice
        by_content.add("toolchain")
    document = {
        "key_version": KEY_VERSION,
        "stage_type": spec.type,
        "implementation_version": stage.version,
        "spec": _spec(spec, by_content),
        "inputs": list(input_digests),
        "files": dict(file_digests),
        "tools": dict(tools),
    }
    if extra:  # only stages that declare extra facts carry the field: other keys stay put
        document["extra"] = extra
    if toolchain:  # likewise: only stages that run in an isolated toolchain
        document["toolchain"] = toolchain
    return document


def _spec(spec: StageSpec, exclude: set[str]) -> dict[str, Any]:
    dumped = spec.model_dump(mode="json", exclude=exclude)
    fields = type(spec).model_fields
    for name in spec.key_when_set:
        if name in dumped and getattr(spec, name) == fields[name].get_default(
            call_default_factory=True
        ):
            del dumped[name]
    return dumped


def explain(
    previous: dict[str, Any] | None, current: dict[str, Any], input_ids: list[str]
) -> list[str]:
    """Human reasons why ``current`` differs from ``previous`` (the last run of the stage)."""
    if previous is None:
        return ["never built"]
    reasons = []
    old_flat, new_flat = _flatten(previous), _flatten(current)
    for path in sorted(old_flat.keys() | new_flat.keys(), key=_order):
        old, new = old_flat.get(path, _ABSENT), new_flat.get(path, _ABSENT)
        if old != new:
            reasons.append(_describe(path, old, new, input_ids))
    return reasons or ["same inputs as the last run, but its output is no longer in the cache"]


_ABSENT = object()
_SECTION_ORDER = (
    "spec",
    "inputs",
    "files",
    "tools",
    "toolchain",
    "extra",
    "implementation_version",
    "stage_type",
)


def _order(path: tuple) -> tuple:
    section = path[0] if path[0] in _SECTION_ORDER else "~"
    rank = _SECTION_ORDER.index(section) if section in _SECTION_ORDER else len(_SECTION_ORDER)
    return (rank, [str(p) for p in path])


def _flatten(doc: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(doc, dict) and doc:
        flat = {}
        for key, value in doc.items():
            flat.update(_flatten(value, (*prefix, key)))
        return flat
    if isinstance(doc, list) and prefix[:1] == ("inputs",):
        return {(*prefix, i): v for i, v in enumerate(doc)}
    return {prefix: doc}


def _describe(path: tuple, old: Any, new: Any, input_ids: list[str]) -> str:
    section, rest = path[0], path[1:]
    if section == "stage_type":
        return f"stage type changed: {_fmt(old)} → {_fmt(new)}"
    if section in ("files", "inputs") and not rest:  # a whole (empty) section appeared or went
        return f"{section} changed"
    if section == "inputs":
        index = rest[0] if rest else 0
        name = input_ids[index] if isinstance(index, int) and index < len(input_ids) else index
        return f"input '{name}' changed (its output has different content)"
    if section == "files":
        return f"file '{rest[0]}' changed (different content)"
    label = ".".join(str(p) for p in rest) or section
    if section == "tools":
        return f"{label} {_tool(old)} → {_tool(new)}"
    if section == "toolchain":
        return f"toolchain {label} {_tool(old)} → {_tool(new)}"
    if section == "implementation_version":
        return f"the stage's implementation changed (version {_fmt(old)} → {_fmt(new)})"
    if section == "spec":
        return f"{label} changed: {_fmt(old)} → {_fmt(new)}"
    return f"{label}: {_fmt(old)} → {_fmt(new)}"


def _fmt(value: Any) -> str:
    if value is _ABSENT:
        return "(unset)"
    return repr(value) if isinstance(value, str) else str(value)


def _tool(version: Any) -> str:
    return "not installed" if version in (None, _ABSENT) else str(version)
