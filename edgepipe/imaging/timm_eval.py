"""timm's own eval preprocessing of a data config: the reference every other preprocessing
(the composed graph, CuPy on the GPU, the calibration inputs) is checked against."""

from __future__ import annotations

__all__ = ["timm_eval_transform"]

from typing import Any

_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def timm_eval_transform(data_config: dict[str, Any]):
    """timm's eval transform (PIL image → normalised tensor) for a data config."""
    from timm.data import create_transform

    config = {k: data_config[k] for k in _TRANSFORM_KEYS if k in data_config}
    return create_transform(**config, is_training=False)
