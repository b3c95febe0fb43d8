"""TorchScript in libtorch, or in the lite interpreter for a ``.ptl`` file."""

from __future__ import annotations

__all__ = ["TorchScriptRuntime", "load_torchscript"]

import warnings
from pathlib import Path
from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

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
class TorchScriptRuntime(Runtime):
    name = "torchscript"
    kinds = (ArtifactKind.TORCHSCRIPT,)
    summary = "libtorch, or the lite interpreter for a .ptl file"
    tools = ("torch",)
    # TorchScript has no output names: the ONNX export's default keeps parity tables alike
    output_names = ["output"]

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import torch

        super().__init__(artifact, options)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.module = load_torchscript(artifact.path / artifact.meta.get("model_file", FULL_FILE))
        self._torch = torch

    def forward(self, batch: Any) -> list[Any]:
        from edgepipe.models.torch_model import forward_numpy

        return forward_numpy(self.module, batch)

    def run(self, batch: Any) -> Any:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch))
