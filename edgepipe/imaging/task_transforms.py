"""The reference eval preprocessing of models without a timm data config, and of one-channel
models: letterbox, height and none crop modes, grayscale (see ``data_config`` for what each
does). PIL resizes as torchvision's ``Resize`` makes it (``Image.resize``, same filters), then
torchvision's ``to_tensor`` and ``normalize``, op for op as timm's transform does them. timm's
own transform stays the reference for 3-channel center, squash and border configs
(``timm_eval.timm_eval_transform`` picks)."""

from __future__ import annotations

__all__ = ["TaskTransform", "task_transform"]

from typing import Any

from edgepipe.imaging.data_config import (
    DEFAULT_PAD_VALUE,
    TASK_CROP_MODES,
    channel_values,
    height_size,
    letterbox_place,
    letterbox_size,
)

_TIMM_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode")
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's IMAGENET_DEFAULT_*


def task_transform(data_config: dict[str, Any]) -> TaskTransform:
    """PIL image → normalised [C, H', W'] tensor for a letterbox, height, none or 1-channel
    data config; missing keys default as timm's ``create_transform`` defaults them."""
    return TaskTransform(data_config)


class TaskTransform:
    """The transform ``task_transform`` returns (callable on a PIL image)."""

    def __init__(self, data_config: dict[str, Any]):
        from PIL import Image

        size = data_config.get("input_size") or (3, 224, 224)
        self.channels, self.size = int(size[0]), (int(size[1]), int(size[2]))
        # timm's defaults; a 1-channel config must give its own (one value each)
        self.mean = channel_values(data_config.get("mean") or _MEAN, self.channels, "mean")
        self.std = channel_values(data_config.get("std") or _STD, self.channels, "std")
        self.crop_mode = data_config.get("crop_mode") or "center"
        interpolation = data_config.get("interpolation") or "bilinear"
        self.resample = Image.Resampling[interpolation.upper()]
        pad_value = data_config.get("pad_value")
        self.pad_value = DEFAULT_PAD_VALUE if pad_value is None else int(pad_value)
        self._timm = None
        if self.crop_mode not in TASK_CROP_MODES:  # one channel, a timm crop mode
            from timm.data import create_transform

            config = {k: data_config[k] for k in _TIMM_KEYS if k in data_config}
            self._timm = create_transform(**config, mean=self.mean, std=self.std, is_training=False)

    def __call__(self, image: Any) -> Any:
        image = image.convert("L" if self.channels == 1 else "RGB")
        if self._timm is not None:
            return self._timm(image)
        from torchvision.transforms import functional

        image = self.resize(image)
        tensor = functional.to_tensor(image)
        return functional.normalize(tensor, list(self.mean), list(self.std))

    def resize(self, image: Any) -> Any:
        """The resized (letterbox: also padded) PIL image, before ToTensor."""
        from PIL import Image

        height, width = image.height, image.width
        if self.crop_mode == "none":
            return image
        if self.crop_mode == "height":
            new_h, new_w = height_size(height, width, self.size[0])
            return image.resize((new_w, new_h), self.resample)
        new_h, new_w = letterbox_size(height, width, self.size)
        resized = image.resize((new_w, new_h), self.resample)
        fill = self.pad_value if self.channels == 1 else (self.pad_value,) * 3
        canvas = Image.new(image.mode, (self.size[1], self.size[0]), fill)
        top, left = letterbox_place((new_h, new_w), self.size)
        canvas.paste(resized, (left, top))
        return canvas
