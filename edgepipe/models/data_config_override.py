"""``data_config`` on a load stage: the recipe's overrides of a model's own eval preprocessing
(timm's resolved config, or what torchvision weights declare), with the crop modes and
one-channel input of detectors, segmenters and text recognisers (``imaging/data_config``)."""

from __future__ import annotations

__all__ = ["DataConfigOverride"]

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from edgepipe.imaging.data_config import (
    CHANNELS_HELP,
    PAD_VALUE_HELP,
    TASK_CROP_MODES_HELP,
    channel_problem,
)
from edgepipe.spec_bounds import (
    MAX_IMAGE_SIDE,
    MAX_MEAN,
    MAX_STD,
    MIN_STD,
    ChannelMean,
    ChannelStd,
    ImageSide,
)
from edgepipe.strict_fields import FieldError


class DataConfigOverride(BaseModel):
    """Overrides for the model's own (timm-resolved) eval preprocessing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: tuple[int, ImageSide, ImageSide] | None = Field(
        default=None,
        description=f"Model input as [channels, height, width]; {CHANNELS_HELP} Height and "
        f"width: 1..{MAX_IMAGE_SIDE}.",
    )
    mean: tuple[ChannelMean, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Per-channel mean subtracted after scaling to 0..1 (one value: every "
        f"channel); each -{MAX_MEAN:g}..{MAX_MEAN:g}.",
    )
    std: tuple[ChannelStd, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Per-channel std divided by after subtracting the mean (one value: every "
        f"channel); each {MIN_STD:g}..{MAX_STD:g}.",
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = Field(
        default=None, description="Resize interpolation."
    )
    crop_pct: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Centre-crop fraction (resize to size/crop_pct); letterbox, height and "
        "none ignore it.",
    )
    crop_mode: Literal["center", "squash", "border", "letterbox", "height", "none"] | None = Field(
        default=None,
        description="timm crop mode: shorter-side resize + centre crop (center), both sides "
        f"(squash), or longer side + padding (border); {TASK_CROP_MODES_HELP}",
    )
    pad_value: int | None = Field(default=None, ge=0, le=255, description=PAD_VALUE_HELP)

    @model_validator(mode="after")
    def _consistent(self) -> DataConfigOverride:
        # the model's own crop mode (timm, torchvision) is never letterbox
        mode = self.crop_mode or "center"
        problem = channel_problem(self.input_size, self.mean, self.std, mode, self.pad_value)
        if problem:
            raise FieldError(*problem)
        return self

    @model_serializer(mode="wrap")
    def _unset_pad_value_absent(self, handler: Any) -> dict[str, Any]:
        """pad_value came after load stages' keys were committed: unset, it is left out of
        the dump (so of the key), and those keys stay."""
        dumped = handler(self)
        if self.pad_value is None:
            dumped.pop("pad_value", None)
        return dumped
