"""Run the source torch model and a converted artifact on the same images.

Used by verification stages (parity, evaluate). The reference applies timm's own eval transform
(PIL) to each image; a *composed* artifact gets the raw image instead, since its graph does the
preprocessing itself — that is exactly the claim being checked.
"""

from __future__ import annotations

__all__ = [
    "Candidate",
    "VerificationSpec",
    "VerificationStage",
    "OnnxCandidate",
    "TorchReference",
    "candidate_kinds",
    "open_candidate",
    "register_candidate",
    "run_on_image",
    "timm_eval_transform",
]

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.imaging.samples import fit_fixed_size, raw_pixels
from edgepipe.models.onnx_io import ONNX_FILE
from edgepipe.models.torch_model import forward_numpy, rebuild
from edgepipe.stages.base import Artifact, ArtifactKind, Stage, StageSpec

_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def timm_eval_transform(data_config: dict[str, Any]):
    """timm's own eval preprocessing (PIL image → normalised tensor) for a data config."""
    from timm.data import create_transform

    config = {k: data_config[k] for k in _TRANSFORM_KEYS if k in data_config}
    return create_transform(**config, is_training=False)


class TorchReference:
    """The source model in eval mode with its own timm preprocessing."""

    def __init__(self, artifact: Artifact, recipe_dir: Path):
        self.module = rebuild(artifact.path, recipe_dir)
        self.data_config = artifact.meta["data_config"]
        self._transform = timm_eval_transform(self.data_config)
        self.weights = artifact.meta.get("weights", "unknown")

    def transform(self, image: Any) -> Any:
        """[1, C, H, W] float32 array from a PIL image, as timm would feed the model."""
        return self._transform(image).unsqueeze(0).numpy()

    def forward(self, batch: Any) -> list[Any]:
        return forward_numpy(self.module, batch)


class Candidate:
    """A converted artifact to verify: runs a batch, and knows how to feed it an image.

    Subclasses (one per artifact kind, registered with :func:`register_candidate`) implement
    ``forward`` and set ``output_names``; the image feeding lives here because every runtime
    receives raw pixels the same way once preprocessing is baked into the graph.
    """

    output_names: list[str]

    def __init__(self, artifact: Artifact):
        self.preprocessing = artifact.meta.get("preprocessing")
        self.postprocess = artifact.meta.get("postprocess") or "none"
        self.precision = artifact.meta.get("precision", "fp32")

    @property
    def composed(self) -> bool:
        return self.preprocessing is not None

    def prepare_image(self, image: Any) -> Any:
        """A composed model with a fixed input size gets the photo resized to that size first;
        the reference then sees the same resized photo, so only the graph's own work differs."""
        return fit_fixed_size(image, self.preprocessing)

    def raw_input(self, image: Any) -> Any:
        """The image as the composed graph's input: layout, dtype and channel order."""
        return raw_pixels(image, self.preprocessing)

    def forward(self, batch: Any) -> list[Any]:
        raise NotImplementedError


def run_on_image(reference: TorchReference, candidate: Candidate, image: Any) -> tuple[list, list]:
    """Both models' outputs on one photo: the torch model through timm's transform, the
    artifact on the same tensor or, for a composed graph, on the photo's raw pixels."""
    image = candidate.prepare_image(image)
    tensor = reference.transform(image)
    raw = candidate.raw_input(image) if candidate.composed else tensor
    return reference.forward(tensor), candidate.forward(raw)


_CANDIDATES: dict[ArtifactKind, type[Candidate]] = {}


def register_candidate(kind: ArtifactKind):
    """Class decorator: the runtime that verification stages use for artifacts of ``kind``."""

    def decorate(cls: type[Candidate]) -> type[Candidate]:
        _CANDIDATES[kind] = cls
        return cls

    return decorate


def candidate_kinds() -> tuple[ArtifactKind, ...]:
    return tuple(_CANDIDATES)


def open_candidate(artifact: Artifact) -> Candidate:
    """The runtime for an artifact, by its kind."""
    if artifact.meta.get("execution_provider") == "TensorrtExecutionProvider":
        return GpuOnnxCandidate(artifact)
    if artifact.kind not in _CANDIDATES:
        raise StageError(f"cannot run a {artifact.kind.value} artifact for verification")
    return _CANDIDATES[artifact.kind](artifact)


@register_candidate(ArtifactKind.ONNX_MODEL)
class OnnxCandidate(Candidate):
    """An ONNX artifact in ONNX Runtime (CPU execution provider)."""

    def __init__(self, artifact: Artifact):
        super().__init__(artifact)
        self.session = self._open_session(artifact)
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _open_session(self, artifact: Artifact) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(
            str(artifact.path / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, batch: Any) -> list[Any]:
        return self.session.run(None, {self.input.name: batch})


class VerificationSpec(StageSpec):
    """Fields every stage that checks an artifact against its torch model has."""

    input_fields: ClassVar[tuple[str, ...]] = ("input", "reference")

    input: str = Field(description="Id of the stage whose artifact is checked.")
    reference: str | None = Field(
        default=None,
        description="Id of the torch-model stage to compare with; default: the nearest "
        "torch-model ancestor of `input` (its load or reparameterize stage).",
    )


class VerificationStage(Stage):
    """A stage whose input is any runnable artifact and whose reference is a torch model."""

    output = ArtifactKind.REPORT
    tools = ("torch", "timm", "onnxruntime", "numpy", "pillow")

    def accepted_kinds(self, field: str, spec: StageSpec | None = None) -> tuple[ArtifactKind, ...]:
        # any artifact a verification runtime is registered for (ONNX, OpenVINO IR, TorchScript)
        return (ArtifactKind.TORCH_MODEL,) if field == "reference" else candidate_kinds()


class GpuOnnxCandidate(OnnxCandidate):
    """A TensorRT/CUDA artifact for verification stages (parity, evaluate): its prebuilt
    engines through TensorRT, the remaining nodes on CUDA."""

    def _open_session(self, artifact: Any) -> Any:
        from edgepipe.stages._cuda_io import open_gpu_session

        session, self._keepalive = open_gpu_session(artifact.path, artifact.meta, None)
        return session
