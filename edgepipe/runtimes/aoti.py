"""AOTInductor: a ``.pt2`` package that ``torch.export`` and Inductor compiled ahead of time for
this machine's CPU; it loads with ``torch._inductor.aoti_load_package``, without the model's
Python code."""

from __future__ import annotations

__all__ = ["AOTI_FILE", "AotiRuntime"]

from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import RuntimeOptions, TorchCallable, register_runtime

AOTI_FILE = "model.pt2"


@register_runtime
class AotiRuntime(TorchCallable):
    name = "aoti"
    kinds = (ArtifactKind.AOTI_PACKAGE,)
    summary = "AOTInductor package compiled for this CPU, loaded without the model's code"

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        super().__init__(artifact, options)
        self.label = "aoti inductor" + (f" {options.threads} threads" if options.threads else "")

    def load(self, artifact: Artifact) -> Any:
        return self._torch._inductor.aoti_load_package(str(artifact.path / AOTI_FILE))
