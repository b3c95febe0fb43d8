"""torchvision models by name (``source: torchvision``): classification, detection and
segmentation builders through ``torchvision.models.get_model``, the task each one does, and the
eval preprocessing its weights declare.

Offline rules match timm's: random weights never touch the network — detection and
segmentation builders would otherwise fetch an ImageNet backbone (``weights_backbone``), so it
is set to None — and ``pretrained: true`` needs the weights file in torch's hub cache already,
which preflight checks.
"""

from __future__ import annotations

__all__ = [
    "build",
    "construct",
    "data_config_overrides",
    "known_problems",
    "pretrained_problems",
    "task_of",
]

import os
from typing import Any

_TASK_PACKAGES = {
    "torchvision.models.detection": "detection",
    "torchvision.models.segmentation": "segmentation",
    "torchvision.models.quantization": "classification",
}


def task_of(name: str) -> str:
    """The task of torchvision model ``name``, from the package its builder lives in."""
    from torchvision.models import get_model_builder

    package = get_model_builder(name).__module__
    for prefix, task in _TASK_PACKAGES.items():
        if package.startswith(prefix):
            return task
    if package.startswith("torchvision.models.video") or package.startswith(
        "torchvision.models.optical_flow"
    ):
        return "unsupported"
    return "classification"


def known_problems(name: str) -> list[str]:
    """Why ``name`` cannot be built here ([] when it can)."""
    from torchvision.models import list_models

    available = list_models()
    if name not in available:
        close = [m for m in available if name.split("_")[0] in m][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        return [f"'{name}' is not a torchvision model{hint} (see torchvision.models.list_models())"]
    if task_of(name) == "unsupported":
        return [f"'{name}' is a video or optical-flow model: edgepipe handles image models"]
    return []


def build(
    name: str, pretrained: bool, num_classes: int | None, kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The model, with its DEFAULT weights when ``pretrained``, else randomly initialised and
    without a downloaded backbone; and the keyword arguments that rebuild its structure
    without any weights (``construct``)."""
    from torchvision.models import get_model

    kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if task_of(name) in ("detection", "segmentation"):
        kwargs.setdefault("weights_backbone", None)
    module = get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    if getattr(module, "aux_classifier", None) is not None:
        kwargs["aux_loss"] = True  # DEFAULT segmentation weights switch the aux head on
    if pretrained and num_classes is None and hasattr(module, "num_classes"):
        kwargs["num_classes"] = module.num_classes
    return module, kwargs


def construct(name: str, kwargs: dict[str, Any]) -> Any:
    """The structure ``build`` recorded, randomly initialised: stored weights go into it."""
    from torchvision.models import get_model

    return get_model(name, weights=None, **kwargs)


def pretrained_problems(name: str) -> list[str]:
    """Empty when the DEFAULT weights of ``name`` are in torch's hub cache (or the network may
    fetch them: EDGEPIPE_ALLOW_DOWNLOAD=1); else how to provide them."""
    import torch
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    target = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if os.path.exists(target) or os.environ.get("EDGEPIPE_ALLOW_DOWNLOAD") == "1":
        return []
    return [
        f"pretrained torchvision weights for '{name}' are not in the local cache ({target}): "
        f"download {weights.url} there on a machine with network access, or set weights: to a "
        "local checkpoint, or pretrained: false"
    ]


def data_config_overrides(name: str, module: Any) -> dict[str, Any]:
    """The eval preprocessing the model's DEFAULT weights declare, as a data_config (reading
    metadata only: nothing is downloaded). Detection models normalise and resize inside the
    model and take 0..1 images: mean 0, std 1, at the size their transform resizes to."""
    from torchvision.models import get_model_weights

    transforms = get_model_weights(name).DEFAULT.transforms()
    kind = type(transforms).__name__
    if kind == "ObjectDetection":
        size = int(module.transform.min_size[0])
        return {
            "input_size": [3, size, size],
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "squash",
        }
    config: dict[str, Any] = {
        "mean": [float(v) for v in transforms.mean],
        "std": [float(v) for v in transforms.std],
        "interpolation": transforms.interpolation.value,
    }
    resize = int(transforms.resize_size[0])
    if kind == "ImageClassification":
        crop = int(transforms.crop_size[0])
        config.update(input_size=[3, crop, crop], crop_pct=crop / resize, crop_mode="center")
    else:  # SemanticSegmentation: a shorter-side resize, no crop
        config.update(input_size=[3, resize, resize], crop_pct=1.0, crop_mode="squash")
    return config
