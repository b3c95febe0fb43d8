"""timm's eval transform as matrix products, with CuPy on a CUDA device or NumPy on the host,
using Pillow's resize weights (``Resample.c``: support scaled by the downscale factor, 22-bit
fixed-point taps, each pass rounded to 8 bits, horizontal first): the same pixels as PIL."""

from __future__ import annotations

__all__ = ["TimmPreprocessor", "resample_weights"]

import functools
from typing import Any

from edgepipe.errors import StageError
from edgepipe.imaging.preprocess_graph import Preprocessing

_PRECISION_BITS = 32 - 8 - 2  # Pillow Resample.c, 8 bits per channel


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


_FILTERS = {"bilinear": (lambda x: max(0.0, 1.0 - abs(x)), 1.0), "bicubic": (_bicubic, 2.0)}


@functools.lru_cache(maxsize=256)
def resample_weights(in_size: int, out_size: int, interpolation: str) -> Any:
    """Pillow's resize of one axis as ``[out_size, in_size]`` 22-bit fixed-point weights: multiply,
    add ``2**21``, floor-divide by ``2**22`` and clip to 0..255 to get Pillow's pixels."""
    import numpy as np

    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    if interpolation == "nearest":  # Pillow's ImagingScaleAffine: a running sum, truncated
        position = scale * 0.5
        for out in range(out_size):
            matrix[out, min(int(position), in_size - 1)] = 1 << _PRECISION_BITS
            position += scale
        return matrix
    if interpolation not in _FILTERS:
        raise StageError(f"no GPU preprocessing for interpolation {interpolation!r}")
    kernel, support = _FILTERS[interpolation]
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    inverse = 1.0 / filter_scale
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        weights = [kernel((x - center + 0.5) * inverse) for x in range(lo, hi)]
        total = sum(weights)
        weights = [w / total for w in weights] if total != 0.0 else weights
        matrix[out, lo:hi] = [
            int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5)) for w in weights
        ]
    return matrix


class TimmPreprocessor:
    """timm's eval transform of a data config: RGB uint8 HWC → ``[1, 3, H, W]`` float32, with
    CuPy on CUDA device ``device_id``, or NumPy on the host when it is None."""

    def __init__(self, data_config: dict[str, Any], device_id: int | None = None):
        import numpy as np

        mode = data_config.get("crop_mode")
        if mode in ("letterbox", "height", "none") or data_config["input_size"][0] != 3:
            what = f"crop_mode '{mode}'" if data_config["input_size"][0] == 3 else "grayscale"
            raise StageError(f"{what} has no GPU preprocessing yet")
        self.pre = Preprocessing(
            crop_size=tuple(data_config["input_size"][-2:]),
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            interpolation=data_config.get("interpolation") or "bilinear",
            crop_pct=data_config.get("crop_pct") or 0.875,
            crop_mode=mode if mode in ("squash", "border") else "center",
        )
        if self.pre.crop_mode == "border":
            raise StageError("crop_mode 'border' has no GPU preprocessing yet")
        self.xp = np
        if device_id is not None:
            import cupy

            cupy.cuda.Device(device_id).use()
            self.xp = cupy
        self._mean = self.xp.asarray(self.pre.mean, dtype=np.float32)
        self._std = self.xp.asarray(self.pre.std, dtype=np.float32)

    def __call__(self, image: Any) -> Any:
        xp = self.xp
        height, width = image.shape[:2]
        resized_h, resized_w = self.pre.resized(height, width)
        top, left = self.pre.crop_start(resized_h, resized_w)
        crop_h, crop_w = self.pre.crop_size
        pixels = xp.asarray(image[..., :3], dtype=xp.float64)
        if resized_w != width:  # horizontal pass first, as Pillow does: (H, C, W) @ (W, w)
            rows = resample_weights(width, resized_w, self.pre.interpolation)[left : left + crop_w]
            pixels = self._round(pixels.transpose(0, 2, 1) @ xp.asarray(rows.T)).transpose(0, 2, 1)
        else:
            pixels = pixels[:, left : left + crop_w]
        if resized_h != height:  # (h, H) @ (H, w * C)
            rows = resample_weights(height, resized_h, self.pre.interpolation)[top : top + crop_h]
            flat = xp.asarray(rows) @ pixels.reshape(height, -1)
            pixels = self._round(flat).reshape(crop_h, crop_w, 3)
        else:
            pixels = pixels[top : top + crop_h]
        # torchvision: to_tensor divides by 255 in float32, normalize subtracts then divides
        tensor = pixels.astype(xp.float32) / xp.float32(255)
        tensor = (tensor - self._mean) / self._std
        return xp.ascontiguousarray(tensor.transpose(2, 0, 1)[None])

    def _round(self, sums: Any) -> Any:
        half = float(1 << (_PRECISION_BITS - 1))
        return self.xp.clip(self.xp.floor((sums + half) / (1 << _PRECISION_BITS)), 0, 255)
