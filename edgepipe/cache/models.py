"""Records stored in the cache: manifest entries, action records, and the corruption error."""

from __future__ import annotations

__all__ = ["ActionRecord", "CacheCorruptError", "Digest", "ManifestEntry", "parse_record"]

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgepipe.errors import CacheError

Digest = Annotated[
    str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex digest (64 lowercase chars).")
]


class CacheCorruptError(CacheError):
    """Something the cache stored is missing or does not match its digest.

    The fix is ``edgepipe cache verify`` to see what is affected, then ``edgepipe cache gc``
    (or ``clear``); affected stages simply run again.
    """


def _check_relative_posix(path: str) -> str:
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\0" in path:
        raise ValueError(f"manifest path must be relative, normalised, inside the tree: {path!r}")
    return path


class ManifestEntry(BaseModel):
    """One regular file of a stored directory tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Path relative to the tree root, '/'-separated, no '..'.")
    digest: Digest
    size: int = Field(ge=0, description="Size in bytes.")
    executable: bool = Field(default=False, description="Whether the owner-execute bit was set.")

    @field_validator("path")
    @classmethod
    def check_path(cls, value: str) -> str:
        """Reject paths that could escape the directory the tree is materialised into."""
        return _check_relative_posix(value)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ActionRecord(BaseModel):
    """What a stage produced for one action key, and how it got there."""

    key: Digest = Field(description="The action key: sha256 of the canonical key document.")
    recipe: str = Field(description="Name of the recipe that ran the stage.")
    stage_id: str = Field(description="Id of the stage in that recipe.")
    stage_type: str = Field(description="The stage's type, e.g. 'export'.")
    key_document: dict[str, Any] = Field(description="The document that was hashed into key.")
    output_digest: Digest = Field(description="Tree digest of the output directory.")
    output_kind: str = Field(description="Artifact kind of the output, e.g. 'onnx'.")
    output_size: int = Field(ge=0, description="Total size of the output files in bytes.")
    log: str = Field(default="", description="Captured log of the stage run.")
    seconds: float = Field(default=0.0, ge=0, description="Wall-clock run time of the stage.")
    peak_rss_bytes: int = Field(default=0, ge=0, description="Peak resident memory of the run.")
    created: str = Field(default_factory=_utc_now, description="ISO-8601 UTC creation time.")


def parse_record(data: bytes, key: str) -> tuple[ActionRecord | None, str | None]:
    """``(record, None)``, or ``(None, why)`` when ``data`` is not a valid action record stored
    under ``key`` (local and remote caches, and their verify, judge records alike)."""
    try:
        record = ActionRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, f"not a valid action record: {first['msg']}" + (f" ({where})" if where else "")
    if record.key != key:
        return None, f"holds key {record.key}, stored under the wrong name"
    return record, None
