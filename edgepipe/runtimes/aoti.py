"""AOTInductor: a ``.pt2`` package that ``torch.export`` and Inductor compiled ahead of time for
this machine's CPU; it loads with ``torch._inductor.aoti_load_package``, without the model's
Python code."""

from __future__ import annotations

__all__ = ["AOTI_FILE", "AotiRuntime"]

from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

AOTI_FILE = "model.pt2"


@register_runtime
class AotiRuntime(Runtime):
    name = "aoti"
    kinds = (ArtifactKind.AOTI_PACKAGE,)
    summary = "AOTInductor package compiled for this CPU, loaded without the model's code"
    tools = ("torch",)
    # an exported program's outputs are unnamed: the ONNX export's default keeps tables alike
    output_names = ["output"]

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import torch

        super().__init__(artifact, options)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.runner = torch._inductor.aoti_load_package(str(artifact.path / AOTI_FILE))
        self.label = "aoti inductor" + (f" {options.threads} threads" if options.threads else "")

    def forward(self, batch: Any) -> list[Any]:
        from edgepipe.models.torch_model import forward_numpy

        return forward_numpy(self.runner, batch)

    def run(self, batch: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.runner(torch.from_numpy(batch))
