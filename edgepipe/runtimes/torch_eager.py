"""torch eager: the source model itself. It is every verification's reference (fed through
timm's own eval transform) and the benchmark's baseline row."""

from __future__ import annotations

__all__ = ["TorchEager", "open_reference", "run_on_image"]

import time
from pathlib import Path
from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.imaging.timm_eval import timm_eval_transform
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime


@register_runtime
class TorchEager(Runtime):
    """A torch-model artifact rebuilt (builder + weights) in eval mode."""

    name = "torch eager"
    kinds = (ArtifactKind.TORCH_MODEL,)
    summary = "the source model: every verification's reference, the benchmark's baseline"
    tools = ("torch", "timm")
    output_names = ["output"]

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import torch

        from edgepipe.models.torch_model import rebuild, task_outputs

        super().__init__(artifact, options)
        self.task = artifact.meta.get("task", "classification")
        if options.threads:
            torch.set_num_threads(options.threads)
        self.module = task_outputs(rebuild(artifact.path, options.recipe_dir), self.task)
        self.channels_last = options.channels_last
        if options.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.compile_seconds: dict[tuple, float] = {}
        """torch.compile: seconds the first call of each input shape took (compiling)."""
        if options.torch_compile:
            self.module = _compiled(self.module, options.torch_compile)
            self.label = f"torch.compile {options.torch_compile}"
        if options.channels_last:
            self.label += " channels-last"
        self.data_config = artifact.meta["data_config"]
        self.weights = artifact.meta.get("weights", "unknown")
        self._transform = timm_eval_transform(self.data_config)
        self._torch = torch

    def transform(self, image: Any) -> Any:
        """[1, C, H, W] float32 array from a PIL image, as timm would feed the model."""
        return self._transform(image).unsqueeze(0).numpy()

    def forward(self, batch: Any) -> list[Any]:
        from edgepipe.models.torch_model import output_tensors

        return [o.float().numpy() for o in output_tensors(self.run(batch))]

    def run(self, batch: Any) -> Any:
        torch = self._torch
        tensor = torch.from_numpy(batch)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        first = self.options.torch_compile and tuple(tensor.shape) not in self.compile_seconds
        started = time.perf_counter()
        with torch.inference_mode():
            outputs = self.module(tensor)
        if first:  # torch.compile compiles on the first call of each input shape
            self.compile_seconds[tuple(tensor.shape)] = time.perf_counter() - started
        return outputs


def _compiled(module: Any, backend: str) -> Any:
    """``module`` through torch.compile. dynamic=False: each batch size gets its own static
    graph (what a benchmark times; the OpenVINO backend fails on dynamo's symbolic batch)."""
    import torch

    if backend == "openvino":
        import openvino.torch  # noqa: F401 - registers the "openvino" backend

        return torch.compile(module, backend="openvino", dynamic=False)
    mode = "max-autotune-no-cudagraphs" if backend == "inductor-max-autotune" else None
    return torch.compile(module, backend="inductor", mode=mode, dynamic=False)


def open_reference(artifact: Artifact, recipe_dir: Path) -> TorchEager:
    """The source model a verification compares an artifact with."""
    return TorchEager(artifact, RuntimeOptions(recipe_dir=recipe_dir))


def run_on_image(reference: TorchEager, candidate: Runtime, image: Any) -> tuple[list, list]:
    """Both models' outputs on one photo: the torch model through timm's transform, the
    artifact on the same tensor or, for a composed graph, on the photo's raw pixels."""
    image = candidate.prepare_image(image)
    tensor = reference.transform(image)
    raw = candidate.raw_input(image) if candidate.composed else tensor
    return reference.forward(tensor), candidate.forward(raw)
