"""ExecuTorch: a ``.pte`` program run by ExecuTorch's Python runtime (the same C++ runtime an
app embeds), its XNNPACK delegate on the CPU's threads. The programs edgepipe writes take batch
1, as on a phone; a larger batch runs one sample at a time."""

from __future__ import annotations

__all__ = ["PTE_FILE", "ExecutorchRuntime", "load_forward"]

from pathlib import Path
from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

PTE_FILE = "model.pte"


def load_forward(path: Path) -> Any:
    """The ``forward`` method of the program at ``path``, loaded in ExecuTorch's runtime: call
    ``.execute([tensor, …])``."""
    from executorch.runtime import Runtime as ExecutorchLoader

    return ExecutorchLoader.get().load_program(str(path)).load_method("forward")


@register_runtime
class ExecutorchRuntime(Runtime):
    name = "executorch"
    kinds = (ArtifactKind.EXECUTORCH_PROGRAM,)
    summary = "ExecuTorch runtime, XNNPACK delegate, threads pinned; batch 1 per call"
    tools = ("executorch",)
    output_names = ["output"]  # as TorchScript and AOTI: a .pte's outputs have no names

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import torch

        super().__init__(artifact, options)
        if options.threads:
            # XNNPACK's threadpool is process-wide; "unsafe" only while a method is running
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(options.threads)
        self.method = load_forward(artifact.path / PTE_FILE)
        self._torch = torch
        threads = f" {options.threads} threads" if options.threads else ""
        self.label = f"executorch XNNPACK{threads}"

    def forward(self, batch: Any) -> list[Any]:
        import numpy as np

        rows = [self._sample(sample) for sample in np.asarray(batch, dtype=np.float32)]
        return [np.concatenate(parts) for parts in zip(*rows, strict=True)]

    def run(self, batch: Any) -> Any:
        return [self._sample(sample) for sample in batch]

    def _sample(self, sample: Any) -> list[Any]:
        tensor = self._torch.from_numpy(sample[None]).contiguous()
        return [output.numpy() for output in self.method.execute([tensor])]
