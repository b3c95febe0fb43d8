"""torch eager: the source model itself. It is every verification's reference (fed through
timm's own eval transform) and the benchmark's baseline row."""

from __future__ import annotations

__all__ = ["TorchEager", "open_reference", "run_on_image"]

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

        from edgepipe.models.torch_model import rebuild

        super().__init__(artifact, options)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.module = rebuild(artifact.path, options.recipe_dir)
        self.data_config = artifact.meta["data_config"]
        self.weights = artifact.meta.get("weights", "unknown")
        self._transform = timm_eval_transform(self.data_config)
        self._torch = torch

    def transform(self, image: Any) -> Any:
        """[1, C, H, W] float32 array from a PIL image, as timm would feed the model."""
        return self._transform(image).unsqueeze(0).numpy()

    def forward(self, batch: Any) -> list[Any]:
        from edgepipe.models.torch_model import forward_numpy

        return forward_numpy(self.module, batch)

    def run(self, batch: Any) -> Any:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch))


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
