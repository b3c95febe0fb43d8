"""What stages hand each other and runtimes open: an artifact is a folder plus its
``artifact.json`` (kind and metadata). Stages, runtimes and the runner all share these, so they
live apart from each of them."""

from __future__ import annotations

__all__ = ["ARTIFACT_FILE", "Artifact", "ArtifactKind", "artifact_bytes"]

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

ARTIFACT_FILE = "artifact.json"


class ArtifactKind(StrEnum):
    """What a stage produces; checked between stages when the graph is built."""

    TORCH_MODEL = "torch-model"
    ONNX_MODEL = "onnx-model"
    OPENVINO_IR = "openvino-ir"
    TORCHSCRIPT = "torchscript"
    TFLITE_MODEL = "tflite-model"
    AOTI_PACKAGE = "aoti-package"
    EXECUTORCH_PROGRAM = "executorch-program"
    REPORT = "report"


@dataclass(frozen=True)
class Artifact:
    """A stage output handed to a downstream stage: a directory plus its ``artifact.json``."""

    kind: ArtifactKind
    path: Path
    meta: dict[str, Any]
    stage_id: str
    digest: str = ""
    """Content digest of the artifact: how reports refer to it without naming stage ids."""

    @classmethod
    def read(cls, path: Path, stage_id: str, digest: str = "") -> Artifact:
        doc = json.loads((path / ARTIFACT_FILE).read_text())
        return cls(ArtifactKind(doc["kind"]), path, doc["meta"], stage_id, digest)


def artifact_bytes(artifact: Artifact) -> int:
    """Size on disk of what the artifact ships (its files, not its ``artifact.json``)."""
    return sum(
        p.stat().st_size
        for p in artifact.path.rglob("*")
        if p.is_file() and p.name != ARTIFACT_FILE
    )
