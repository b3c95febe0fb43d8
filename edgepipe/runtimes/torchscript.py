"""TorchScript in libtorch, or in the lite interpreter for a ``.ptl`` file."""

from __future__ import annotations

__all__ = ["TorchScriptRuntime", "load_torchscript"]

import warnings
from pathlib import Path
from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import TorchCallable, register_runtime

FULL_FILE = "model.pt"


def load_torchscript(path: Path):
    """A saved TorchScript model, with the lite interpreter for a ``.ptl`` file."""
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    with warnings.catch_warnings():
        # torch deprecates TorchScript at every call; the stage's log says so once
        warnings.filterwarnings("ignore", ".*(deprecated|Lite Interpreter)")
        if path.suffix == ".ptl":
            return _load_for_lite_interpreter(str(path))
        return torch.jit.load(str(path), map_location="cpu")


@register_runtime
class TorchScriptRuntime(TorchCallable):
    name = "torchscript"
    kinds = (ArtifactKind.TORCHSCRIPT,)
    summary = "libtorch, or the lite interpreter for a .ptl file"

    def load(self, artifact: Artifact) -> Any:
        return load_torchscript(artifact.path / artifact.meta.get("model_file", FULL_FILE))
