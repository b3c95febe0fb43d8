"""Data configs beyond timm's classifiers: the crop modes of detectors, segmenters and text
recognisers, one-channel (grayscale) models, and the size arithmetic that the reference
transform (``task_transforms``) and the composed graph (``task_graph``) share.

A data config is the dict ``torch_model.data_config_of`` makes: ``input_size`` [C, H, W],
``mean``, ``std`` (one value per channel), ``interpolation``, ``crop_pct``, ``crop_mode`` and,
with letterbox only, ``pad_value``. Besides timm's crop modes (center, squash, border):

- ``letterbox``: keep the aspect ratio and fit the photo (h x w) inside H x W:
  ``scale = min(H / h, W / w)``, resized to ``(round(h * scale), round(w * scale))`` (Python's
  round, half to even; clamped to 1..H and 1..W), pasted at top ``(H - nh) // 2``, left
  ``(W - nw) // 2`` on an H x W canvas of ``pad_value`` (0..255, every channel; default 114).
  crop_pct is ignored;
- ``height``: height H, width ``max(1, round(w * H / h))``, no crop: the tensor's width varies
  per photo (CTC text recognisers); W is only the width of tracing and export examples;
- ``none``: no resize at all, the photo at its own size (detectors that resize inside).

``input_size[0] == 1``: the model takes one channel. The photo becomes luma first, as PIL's
``convert("L")`` does (ITU-R 601-2 in integers: ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``),
then is resized; ``mean`` and ``std`` then have one value.
"""

from __future__ import annotations

__all__ = [
    "CHANNELS_HELP",
    "DEFAULT_PAD_VALUE",
    "LUMA_WEIGHTS",
    "PAD_VALUE_HELP",
    "TASK_CROP_MODES",
    "TASK_CROP_MODES_HELP",
    "channel_problem",
    "channel_values",
    "effective_config",
    "height_size",
    "letterbox_place",
    "letterbox_size",
    "output_size",
    "task_resized",
    "uses_task_transform",
]

from typing import Any

from edgepipe.errors import StageError

TASK_CROP_MODES = ("letterbox", "height", "none")
# field descriptions the load stage's data_config and compose-preprocessing share
TASK_CROP_MODES_HELP = (
    "letterbox: keep the aspect ratio, fit inside height x width and pad around with pad_value "
    "(crop_pct ignored; detectors); height: resize to the height keeping the aspect ratio, any "
    "width, no crop (CTC text recognisers; input_size's width is only the export example's); "
    "none: no resize, the image at its own size (models that resize inside)."
)
CHANNELS_HELP = (
    "channels 3 (RGB) or 1 (grayscale: photos become luma as PIL's convert('L') makes it, "
    "before resizing; mean and std then have one value)."
)
PAD_VALUE_HELP = (
    "Grey level (0..255, every channel) a letterboxed image is padded with; default 114. "
    "Only with crop_mode: letterbox."
)
DEFAULT_PAD_VALUE = 114  # the grey YOLO-style detectors letterbox with
LUMA_WEIGHTS = (19595, 38470, 7471)  # PIL's R, G, B weights, in 1/65536
_CHANNELS = (1, 3)


def uses_task_transform(data_config: dict[str, Any]) -> bool:
    """Whether ``task_transforms`` is the reference for this config (timm's is otherwise)."""
    channels = int((data_config.get("input_size") or (3,))[0])
    return data_config.get("crop_mode") in TASK_CROP_MODES or channels == 1


def letterbox_size(height: int, width: int, box: tuple[int, int]) -> tuple[int, int]:
    """Size a ``height`` x ``width`` photo is resized to, to fit ``box`` (H, W)."""
    scale = min(box[0] / height, box[1] / width)
    return tuple(  # type: ignore[return-value]
        min(max(1, round(side * scale)), limit)
        for side, limit in zip((height, width), box, strict=True)
    )


def letterbox_place(resized: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the resized photo on the letterbox canvas."""
    return (box[0] - resized[0]) // 2, (box[1] - resized[1]) // 2


def height_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Size a photo is resized to at a fixed height ``target``, keeping its aspect ratio."""
    return target, max(1, round(width * target / height))


def task_resized(crop_mode: str, height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """letterbox, height or none: the size a photo is resized to, for a model input ``size``."""
    if crop_mode == "letterbox":
        return letterbox_size(height, width, size)
    return height_size(height, width, size[0]) if crop_mode == "height" else (height, width)


def output_size(
    crop_mode: str, size: tuple[int, int], image: tuple[int, int] | None
) -> tuple[int | None, int | None]:
    """The preprocessed tensor's (height, width) for a model input ``size``; None where it
    depends on the photo's size (``image``: the photo's fixed size, if it has one)."""
    if crop_mode == "height":
        return size[0], height_size(*image, size[0])[1] if image else None
    if crop_mode == "none":
        return image or (None, None)
    return size


def channel_values(values: Any, channels: int, field: str) -> tuple[float, ...]:
    """``mean`` or ``std`` with one value per channel: one value stands for every channel, and
    three equal values for the one channel of a grayscale model."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if channels == 1 and len(set(values)) == 1:
        return values[:1]
    raise ValueError(
        f"{field} has {len(values)} values but the model input has {channels} channel(s) "
        f"(input_size): give {'one value' if channels == 1 else f'1 or {channels} values'}"
    )


def channel_problem(
    input_size: Any, mean: Any, std: Any, crop_mode: str | None, pad_value: int | None
) -> tuple[str, str] | None:
    """(field, message) for a recipe's data config fields that contradict each other, or None.
    A spec's validator raises it as a FieldError."""
    if input_size is not None and input_size[0] not in _CHANNELS:
        return "input_size", (
            f"the first value is the channel count: 1 (grayscale) or 3 (RGB), not {input_size[0]}"
        )
    for field, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in _CHANNELS:
            return field, f"give 1 value (every channel) or 3 (R, G, B), not {len(values)}"
        if values is not None and input_size is not None and len(values) > input_size[0]:
            return field, "input_size has 1 channel (grayscale): give one value"
    if pad_value is not None and crop_mode not in (None, "letterbox"):
        return "pad_value", "applies only with crop_mode: letterbox"
    return None


def effective_config(data_config: dict | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """An artifact's data config under a stage's overrides (None: unset), defaulted as timm's
    ``create_transform`` defaults it; mean/std one value per channel, pad_value only with
    letterbox."""
    set_here = {k: v for k, v in overrides.items() if v is not None}
    config = {**(data_config or {}), **set_here}
    missing = [k for k in ("input_size", "mean", "std") if config.get(k) is None]
    if missing:
        raise StageError(
            f"the input artifact has no data config with {', '.join(missing)}: set them on "
            "this stage (or data_config on the load stage)"
        )
    # create_transform's own defaults; any crop_mode but squash/border is centre cropping
    config["interpolation"] = config.get("interpolation") or "bilinear"
    config["crop_pct"] = config.get("crop_pct") or 0.875
    mode = config.get("crop_mode")
    config["crop_mode"] = mode if mode in ("squash", "border", *TASK_CROP_MODES) else "center"
    channels = int(config["input_size"][0])
    try:
        config["mean"] = channel_values(config["mean"], channels, "mean")
        config["std"] = channel_values(config["std"], channels, "std")
    except ValueError as exc:
        raise StageError(str(exc)) from None
    pad_value = config.pop("pad_value", None)
    if config["crop_mode"] == "letterbox":
        config["pad_value"] = DEFAULT_PAD_VALUE if pad_value is None else int(pad_value)
    return config
