"""The ``torch-model`` artifact: how to rebuild an ``nn.Module`` plus its weights.

A torch model is stored as ``model.json`` (a *builder*: timm name or ``module:callable`` with
kwargs, and the transforms applied since, e.g. reparameterization) and ``weights.safetensors``.
Storing a builder instead of a pickle keeps loading safe (no arbitrary code from the cache) and
the artifact content-addressable: the same weights give the same bytes.
"""

from __future__ import annotations

__all__ = [
    "BUILDER_FILE",
    "WEIGHTS_FILE",
    "WRAPPED",
    "data_config_of",
    "forward_numpy",
    "import_callable",
    "input_only",
    "output_tensors",
    "rebuild",
    "save_torch_model",
    "task_outputs",
]

import importlib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError

BUILDER_FILE = "model.json"  # how to rebuild the architecture (timm name, factory…)
WEIGHTS_FILE = "weights.safetensors"


def save_torch_model(module: Any, builder: dict[str, Any], out_dir: Path) -> None:
    """Write ``module``'s weights and the builder that recreates its architecture."""
    from safetensors.torch import save_model

    (out_dir / BUILDER_FILE).write_text(json.dumps(builder, indent=2, sort_keys=True))
    save_model(module, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})


def rebuild(artifact_dir: Path, recipe_dir: Path) -> Any:
    """Recreate the module stored in a torch-model artifact, in eval mode."""
    from safetensors.torch import load_model

    builder = json.loads((artifact_dir / BUILDER_FILE).read_text())
    module = _construct(builder, recipe_dir)
    from edgepipe.models import transforms

    # transforms change the structure; replay them so the stored (transformed) weights fit
    for name in builder.get("transforms", []):
        module = transforms.apply(module, name)
    missing, unexpected = load_model(module, str(artifact_dir / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise StageError(
            "stored weights do not fit the rebuilt model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}); "
            "the model code changed since the artifact was built: "
            "run with --force on its load stage"
        )
    return module.eval()


def _construct(builder: dict[str, Any], recipe_dir: Path) -> Any:
    if builder["source"] == "timm":
        import timm

        return timm.create_model(builder["name"], pretrained=False, **builder.get("kwargs", {}))
    if builder["source"] == "torchvision":
        from edgepipe.models.torchvision_models import construct

        return construct(builder["name"], builder.get("kwargs", {}))
    factory = import_callable(builder["factory"], recipe_dir)
    return factory(**builder.get("kwargs", {}))


@contextmanager
def _on_path(directory: Path):
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))


def import_callable(reference: str, recipe_dir: Path) -> Any:
    """Import ``module:callable``, searching the recipe's directory first."""
    module_name, _, attr = reference.partition(":")
    try:
        with _on_path(recipe_dir):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(
            f"cannot import module '{module_name}' for factory '{reference}': {exc}. "
            f"Modules are searched in the recipe's folder ({recipe_dir}) and then on sys.path"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise StageError(
                f"module '{module_name}' has no attribute '{attr}' (factory '{reference}')"
            )
        target = getattr(target, part)
    if not callable(target):
        raise StageError(f"'{reference}' is not callable")
    return target


def data_config_of(module: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """timm's resolved eval data config (input size, mean/std, interpolation, crop) + overrides;
    mean and std get one value per input channel, and ``pad_value`` is there with letterbox
    only (other configs, and so their artifacts' digests, stay as they were)."""
    from timm.data import resolve_model_data_config

    from edgepipe.imaging.data_config import DEFAULT_PAD_VALUE, channel_values

    config = dict(resolve_model_data_config(module))
    config.update({k: v for k, v in overrides.items() if v is not None})
    input_size = [int(v) for v in config["input_size"]]
    try:
        mean, std = (channel_values(config[k], input_size[0], k) for k in ("mean", "std"))
    except ValueError as exc:
        raise StageError(f"data_config: {exc}") from None
    data_config = {
        "input_size": input_size,
        "interpolation": str(config.get("interpolation", "bicubic")),
        "mean": list(mean),
        "std": list(std),
        "crop_pct": float(config.get("crop_pct", 0.875)),
        "crop_mode": str(config.get("crop_mode", "center")),
    }
    if data_config["crop_mode"] == "letterbox":
        pad_value = config.get("pad_value")
        data_config["pad_value"] = DEFAULT_PAD_VALUE if pad_value is None else int(pad_value)
    return data_config


def output_tensors(outputs: Any) -> list[Any]:
    """A model's outputs as a list: a dict's values, a tuple's items, or the one tensor."""
    outputs = list(outputs.values()) if isinstance(outputs, dict) else outputs
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def forward_numpy(module: Any, batch: Any) -> list[Any]:
    """Run a torch (or TorchScript) module on a numpy batch: its outputs as float32 arrays."""
    import torch

    with torch.no_grad():
        outputs = module(torch.from_numpy(batch))
    return [o.float().numpy() for o in output_tensors(outputs)]


WRAPPED = "inner"
"""The attribute ``input_only`` keeps the model in: module names of an exported wrapper start
with it."""


def input_only(module: Any, task: str | None = None) -> Any:
    """Wrap a model so forward takes only ``x``: exporters and tracers otherwise turn forward()'s
    default arguments into graph inputs or constants (the legacy ONNX exporter fails on timm
    eva02's ``is_causal`` that way). ``task`` shapes the outputs as deployed models give them
    (``task_outputs``)."""
    import torch

    class InputOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    if task in _TASK_WRAPPERS:
        return _TASK_WRAPPERS[task]()(module).eval()
    return InputOnly(module).eval()


def task_outputs(module: Any, task: str | None) -> Any:
    """``module`` as its task is deployed: torchvision detectors take one [1, 3, H, W] tensor
    (0..1) and give boxes (xyxy pixels), scores and labels; segmenters give the main ``out``
    logits only (the auxiliary head is a training aid). Other tasks: ``module`` itself."""
    return input_only(module, task) if task in _TASK_WRAPPERS else module


def _detection_outputs() -> type:
    import torch

    class DetectionOutputs(torch.nn.Module):
        """One image per call: torchvision detectors take a list of images and return a list
        of dicts, which neither exporters nor runtimes carry."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            found = self.inner(list(x))[0]
            return found["boxes"], found["scores"], found["labels"]

    return DetectionOutputs


def _segmentation_outputs() -> type:
    import torch

    class SegmentationOutputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            outputs = self.inner(x)
            return outputs["out"] if isinstance(outputs, dict) else outputs

    return SegmentationOutputs


_TASK_WRAPPERS = {"detection": _detection_outputs, "segmentation": _segmentation_outputs}
