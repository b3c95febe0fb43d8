"""timm's own eval preprocessing of a data config: the reference every other preprocessing
(the composed graph, CuPy on the GPU, the calibration inputs) is checked against. Crop modes
timm lacks (letterbox, height, none) and one-channel models have theirs in
``task_transforms``."""

from __future__ import annotations

__all__ = ["timm_eval_transform"]

from typing import Any

from edgepipe.imaging.data_config import uses_task_transform
from edgepipe.imaging.task_transforms import task_transform

_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def timm_eval_transform(data_config: dict[str, Any]):
    """timm's eval transform (PIL image → normalised tensor) for a data config; for letterbox,
    height, none or one channel, ``task_transforms``' (timm has none)."""
    if uses_task_transform(data_config):
        return task_transform(data_config)
    from timm.data import create_transform

    config = {k: data_config[k] for k in _TRANSFORM_KEYS if k in data_config}
    return create_transform(**config, is_training=False)
