"""``compose-preprocessing``: bake the model's own eval preprocessing into its ONNX graph.

The deployed model then takes a raw image (uint8 HWC as decoded, any size) and does timm's
resize, centre crop and normalisation itself (or letterbox, fixed-height or no resize, and
grayscale: ``imaging.data_config``); ``preprocess_graph`` builds those ops. The result
is checked with the ONNX checker and run once in ONNX Runtime; whether it computes what the torch
model computes on real photos is the ``parity`` stage's job.
"""

from __future__ import annotations

__all__ = ["ComposePreprocessingSpec", "ComposePreprocessingStage", "ImageSpec"]

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepipe.errors import StageError, summarize_exception
from edgepipe.imaging.data_config import (
    CHANNELS_HELP,
    DEFAULT_PAD_VALUE,
    PAD_VALUE_HELP,
    TASK_CROP_MODES_HELP,
    channel_problem,
    effective_config,
    output_size,
)
from edgepipe.imaging.graph_join import fit_model_input, join, model_image_input
from edgepipe.imaging.preprocess_graph import Preprocessing, build_preprocessing
from edgepipe.models.onnx_io import ONNX_FILE, describe_onnx
from edgepipe.spec_bounds import (
    MAX_IMAGE_SIDE,
    MAX_MEAN,
    MAX_STD,
    MIN_STD,
    ChannelMean,
    ChannelStd,
    ImageSide,
)
from edgepipe.stages.base import (
    ArtifactKind,
    FieldError,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)

_OVERRIDES = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "pad_value")
_BORDER = (
    "crop_mode 'border' (resize the longer side, pad with the mean), which is not supported "
    "yet: set crop_mode: center or squash on the compose-preprocessing stage"
)


class ImageSpec(BaseModel):
    """The raw image the composed model takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Literal["NHWC", "NCHW"] = Field(
        default="NHWC", description="Dimension order: NHWC is how images are decoded."
    )
    dtype: Literal["uint8", "float32"] = Field(
        default="uint8", description="Pixel type; float32 holds the same 0..255 values."
    )
    channels: Literal["RGB", "BGR"] = Field(
        default="RGB", description="Channel order (BGR: as OpenCV decodes images)."
    )
    height: ImageSide | None = Field(
        None, description=f"Fixed height (with width), 1..{MAX_IMAGE_SIDE}; unset: any."
    )
    width: ImageSide | None = Field(
        None, description=f"Fixed width (with height), 1..{MAX_IMAGE_SIDE}; unset: any."
    )
    dynamic_batch: bool = Field(default=True, description="Make the batch dimension dynamic.")

    @model_validator(mode="after")
    def _both_or_neither(self) -> ImageSpec:
        if (self.height is None) != (self.width is None):
            missing = "height" if self.height is None else "width"
            raise FieldError(missing, "set both height and width, or neither (any image size)")
        return self


class ComposePreprocessingSpec(SingleInputSpec):
    """Prepend image preprocessing (resize, centre crop, normalise) to an ONNX model."""

    type: Literal["compose-preprocessing"] = Field(description="Stage type.")
    key_when_set: ClassVar[tuple[str, ...]] = ("pad_value",)
    image: ImageSpec = Field(
        default_factory=ImageSpec, description="Layout, dtype, channel order and size of the image."
    )
    input_size: tuple[Literal[1, 3], ImageSide, ImageSide] | None = Field(
        default=None,
        description=f"Model input [channels, height, width]; default: the data config's. "
        f"{CHANNELS_HELP} The image stays 3-channel. Height and width: 1..{MAX_IMAGE_SIDE}.",
    )
    mean: tuple[ChannelMean, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Per-channel mean (0..1 scale; one value: every channel; each "
        f"-{MAX_MEAN:g}..{MAX_MEAN:g}); default: the data config's.",
    )
    std: tuple[ChannelStd, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="Per-channel std (0..1 scale; one value: every channel; each "
        f"{MIN_STD:g}..{MAX_STD:g}); default: the data config's.",
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = Field(
        default=None, description="Resize interpolation; default: the data config's."
    )
    crop_pct: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Centre-crop fraction (resize to size/crop_pct); default: the data config's.",
    )
    crop_mode: Literal["center", "squash", "border", "letterbox", "height", "none"] | None = Field(
        default=None,
        description="center: shorter side resize + centre crop; squash: both sides resized "
        f"(aspect not kept); border is not supported yet; {TASK_CROP_MODES_HELP} Default: "
        "the data config's.",
    )
    pad_value: int | None = Field(
        default=None, ge=0, le=255, description=f"{PAD_VALUE_HELP} Default: the data config's."
    )
    antialias: bool = Field(
        default=True,
        description="Antialiased resizing exactly like PIL, as plain ops every runtime runs "
        "alike (needs opset 13; without it downscaling aliases and the difference to timm's "
        "preprocessing grows).",
    )
    postprocess: Literal["none", "softmax", "topk"] = Field(
        default="none",
        description="Append softmax ('probabilities') or softmax + top-k ('scores', 'indices') "
        "over the last axis of the model's first output.",
    )
    top_k: int = Field(
        default=5, ge=1, le=1000, description="How many classes postprocess: topk keeps (1..1000)."
    )
    input_name: str = Field(default="image", min_length=1, description="Name of the image input.")

    @model_validator(mode="after")
    def _consistent(self) -> ComposePreprocessingSpec:
        if "top_k" in self.model_fields_set and self.postprocess != "topk":
            raise FieldError("top_k", "applies only to 'postprocess: topk'")
        fields = (self.input_size, self.mean, self.std, self.crop_mode, self.pad_value)
        if problem := channel_problem(*fields):
            raise FieldError(*problem)
        return self


@register_stage
class ComposePreprocessingStage(Stage):
    type = "compose-preprocessing"
    spec_class = ComposePreprocessingSpec
    version = 2  # 2: PIL-exact antialiased resize of the crop only (resample_graph); `weights`
    tools = ("onnx", "onnxruntime", "numpy")
    input_kinds = (ArtifactKind.ONNX_MODEL,)
    output = ArtifactKind.ONNX_MODEL
    summary = "Bake resize, centre crop and normalisation into an ONNX model (raw image input)."

    def preflight(self, spec: ComposePreprocessingSpec, recipe_dir: Path) -> list[str]:
        problems = super().preflight(spec, recipe_dir)
        return [*problems, f"it asks for {_BORDER}"] if spec.crop_mode == "border" else problems

    def run(self, spec: ComposePreprocessingSpec, ctx: StageContext) -> dict[str, Any]:
        import onnx

        source = ctx.inputs[0]
        # external weights stay on disk: the graph is edited, the data file copied as is
        model = onnx.load(str(source.path / ONNX_FILE), load_external_data=False)
        image_input, opset = model_image_input(model)
        pre = _resolve(spec, source.meta.get("data_config"), image_input, opset, ctx)
        prep = build_preprocessing(pre, opset, model.ir_version, spec.input_name)
        join(prep, model, image_input.name, spec.postprocess, spec.top_k)
        target = ctx.out_dir / ONNX_FILE
        _save(model, source.path, target)
        del model, prep
        _check(target, pre, spec.input_name)
        ctx.log.info("composed: %s", ", ".join(f"{k}={v}" for k, v in pre.meta().items()))
        meta = {
            **describe_onnx(target),
            "data_config": source.meta.get("data_config"),
            "weights": source.meta.get("weights"),
        }
        meta.update(preprocessing=pre.meta(), postprocess=spec.postprocess)
        if spec.postprocess == "topk":
            meta["top_k"] = spec.top_k
        return meta


def _resolve(
    spec: ComposePreprocessingSpec, data_config: dict | None, value: Any, opset: int, ctx
) -> Preprocessing:
    config = effective_config(data_config, spec.model_dump(include=set(_OVERRIDES)))
    if config["crop_mode"] == "border":
        raise StageError(f"the model's data config says {_BORDER}")
    if config["interpolation"] not in ("bilinear", "bicubic", "nearest"):
        raise StageError(
            f"interpolation '{config['interpolation']}' has no ONNX Resize equivalent: "
            "set interpolation: bilinear, bicubic or nearest"
        )
    if config["crop_pct"] > 1:
        raise StageError(f"crop_pct {config['crop_pct']} > 1 pads the image: set crop_pct <= 1")
    channels, crop = int(config["input_size"][0]), tuple(int(v) for v in config["input_size"][1:])
    image = (spec.image.height, spec.image.width) if spec.image.height is not None else None
    out = output_size(config["crop_mode"], crop, image)
    batch, output_dtype = fit_model_input(value, channels, out, spec.image.dynamic_batch, ctx.log)
    return Preprocessing(
        crop_size=crop,
        mean=config["mean"],
        std=config["std"],
        interpolation=config["interpolation"],
        crop_pct=float(config["crop_pct"]),
        crop_mode=config["crop_mode"],
        antialias=_antialias(spec, config["interpolation"], opset, ctx),
        **spec.image.model_dump(include={"layout", "dtype", "channels", "height", "width"}),
        batch=batch,
        output_dtype=output_dtype,
        pad_value=config.get("pad_value", DEFAULT_PAD_VALUE),
        model_channels=channels,
    )


def _antialias(spec: ComposePreprocessingSpec, interpolation: str, opset: int, ctx) -> bool:
    # PIL's nearest does not antialias either, and ONNX allows antialias only for linear/cubic
    if not spec.antialias or interpolation == "nearest":
        return False
    if opset < 13:
        ctx.log.warning(
            "the model's opset is %d: the antialiased resize needs opset 13, so downscaling "
            "aliases and the residual vs timm's (PIL) preprocessing grows (see README); "
            "export with opset 13 or newer to avoid it",
            opset,
        )
        return False
    return True


def _save(model: Any, source_dir: Path, target: Path) -> None:
    """Write the graph; external weights are copied byte for byte, so their offsets hold."""
    import onnx

    for data in source_dir.glob(f"{ONNX_FILE}?*"):  # model.onnx.data, as every stage writes
        shutil.copyfile(data, target.parent / data.name)
    onnx.save(model, str(target))


def _check(target: Path, pre: Preprocessing, input_name: str) -> None:
    """ONNX checker (by path, so external weights are found), then one photo through ORT."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        onnx.checker.check_model(str(target))
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, {input_name: pre.feed(_photo())})
    except Exception as exc:  # checker and ORT errors (Fail, InvalidArgument, ...) alike
        raise StageError(f"the composed model is broken: {summarize_exception(exc)}") from None
    if not all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"):
        raise StageError("the composed model gives NaN/inf on a sample photo (is the input's?)")


def _photo() -> Any:
    """A real photo (skimage's cat, 300x451) when scikit-image is installed, else a gradient."""
    import numpy as np

    try:
        from skimage.data import chelsea

        return chelsea()
    except ImportError:  # a test dependency only; any image proves that the graph runs
        ramp = np.add.outer(np.arange(300), np.arange(451))[..., None] * [1, 2, 3]
        return (ramp % 256).astype(np.uint8)
