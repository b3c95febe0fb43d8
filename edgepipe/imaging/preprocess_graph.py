"""timm's eval preprocessing as ONNX ops: raw image in, the model's normalised tensor out.

The reference is ``timm.data.create_transform(**data_config, is_training=False)`` in timm 1.0.31
(``transforms_imagenet_eval``), which works on PIL images:

- ``center`` crop mode, square target: torchvision ``Resize(int)``; the shorter side becomes
  ``scale = floor(size / crop_pct)``, the longer ``int(scale * long / short)`` (truncated);
- ``center``, non-square target: timm ``ResizeKeepRatio``; each side is divided by
  ``min(h / scale_h, w / scale_w)`` and ``round()``-ed (half to even);
- ``squash``: both sides to ``floor(size / crop_pct)``;
- then ``CenterCrop`` (top = ``round((h - crop_h) / 2)``), ``ToTensor`` (/255), ``Normalize``.

The crop modes timm lacks (letterbox, height, none) and grayscale models are ``task_graph``'s,
checked against ``task_transforms``.
"""

from __future__ import annotations

__all__ = ["OUTPUT", "RESIZED_SIZE", "Preprocessing", "build_preprocessing"]

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgepipe.imaging.data_config import (
    DEFAULT_PAD_VALUE,
    TASK_CROP_MODES,
    output_size,
    task_resized,
)
from edgepipe.imaging.resample_graph import nearest, resize_crop
from edgepipe.imaging.task_graph import luma, task_resize

OUTPUT = "preprocess/tensor"  # the preprocessing graph's output: the model's input once joined
RESIZED_SIZE = "preprocess/resized_size"  # [height, width] timm resizes the image to

_FLOAT, _INT64, _DOUBLE = 1, 7, 11  # onnx.TensorProto values; onnx is imported lazily
_FLOATS = {"float32": _FLOAT, "float16": 10, "float64": _DOUBLE}


@dataclass(frozen=True)
class Preprocessing:
    """Everything the graph does, resolved: the raw image's format and timm's eval transform.
    ``crop_size`` is the model input's (H, W) (letterbox: the box; height: H and an example
    width); ``model_channels`` 1 means grayscale, from a 3-channel (RGB/BGR) image."""

    crop_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    antialias: bool = True
    layout: str = "NHWC"
    dtype: str = "uint8"
    channels: str = "RGB"
    height: int | None = None
    width: int | None = None
    batch: int | str = "batch"
    output_dtype: str = "float32"
    pad_value: int = DEFAULT_PAD_VALUE
    model_channels: int = 3

    @property
    def scale_size(self) -> tuple[int, ...]:
        """timm's resize target per side: ``floor(size / crop_pct)``."""
        return tuple(math.floor(size / self.crop_pct) for size in self.crop_size)

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """Size an image of ``height`` x ``width`` is resized to, computed as timm does."""
        if self.crop_mode in TASK_CROP_MODES:
            return task_resized(self.crop_mode, height, width, self.crop_size)
        sh, sw = self.scale_size
        if self.crop_mode == "squash":
            return sh, sw
        if sh == sw:  # torchvision's shorter-side resize; the longer side is truncated
            short = min(height, width)
            return int(sh * height / short), int(sh * width / short)
        ratio = min(height / sh, width / sw)
        return round(height / ratio), round(width / ratio)

    @property
    def output_size(self) -> list[int | str]:
        """The tensor's [height, width]: sizes that depend on the image are named dims."""
        image = (self.height, self.width) if self.height is not None else None
        size = output_size(self.crop_mode, self.crop_size, image)
        names = ("height", "resized_width" if self.crop_mode == "height" else "width")
        return [s if s is not None else name for s, name in zip(size, names, strict=True)]

    def crop_start(self, height: int, width: int) -> tuple[int, ...]:
        """Top-left corner of torchvision's ``CenterCrop`` in a resized image."""
        return tuple(
            int(round((s - c) / 2.0)) for s, c in zip((height, width), self.crop_size, strict=True)
        )

    def feed(self, photo: Any, batch: int = 1) -> Any:
        """An RGB uint8 HWC photo as this graph's input: fixed sizes get a nearest-neighbour
        resize (so any photo fits), then channel order, layout, batch and dtype."""
        import numpy as np

        if self.height is not None:
            photo = photo[np.linspace(0, photo.shape[0] - 1, self.height).round().astype(int)]
            photo = photo[:, np.linspace(0, photo.shape[1] - 1, self.width).round().astype(int)]
        if self.channels == "BGR":
            photo = photo[..., ::-1]
        if self.layout == "NCHW":
            photo = photo.transpose(2, 0, 1)
        batch = self.batch if isinstance(self.batch, int) else batch
        return np.ascontiguousarray(np.repeat(photo[None], batch, axis=0)).astype(self.dtype)

    def meta(self) -> dict[str, Any]:
        """JSON description for the artifact; tells downstream stages how to feed the model."""
        meta = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        del meta["batch"], meta["output_dtype"]  # the ONNX input and model describe these
        if self.crop_mode != "letterbox":  # absent where meaningless: older metas stay as they were
            del meta["pad_value"]
        if self.model_channels == 3:
            del meta["model_channels"]
        if self.crop_mode not in TASK_CROP_MODES:
            sh, sw = self.scale_size
            shorter_side = self.crop_mode == "center" and sh == sw
            meta["resize_size"] = sh if shorter_side else [sh, sw]
        return meta


class _Builder:
    """Collects nodes and constants; every name is prefixed so the graph joins any model."""

    def __init__(self, prefix: str = "preprocess/"):
        self.prefix, self.nodes, self.constants = prefix, [], []

    def const(self, values: Any, dtype: str = "int64") -> str:
        import numpy as np
        from onnx import numpy_helper

        name = f"{self.prefix}const_{len(self.constants)}"
        self.constants.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        name = f"{self.prefix}{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


def build_preprocessing(
    pre: Preprocessing, opset: int = 18, ir_version: int | None = None, input_name: str = "image"
) -> Any:
    """The preprocessing alone as an ONNX model: raw image in, normalised [N, C, H, W] out."""
    from onnx import TensorProto, helper

    g = _Builder()
    x = input_name
    if pre.dtype == "uint8":
        x = g.op("Cast", x, to=TensorProto.FLOAT)
    if pre.model_channels == 1:  # luma before resizing, as PIL's convert("L") then resize
        x = luma(g, x, pre, opset)
    # the antialiased resize works on NHWC pixels (channels inside its matrix products);
    # the other paths on NCHW
    layout = "NHWC" if _resamples(pre) else "NCHW"
    if pre.layout != layout:
        x = g.op("Transpose", x, perm=[0, 3, 1, 2] if layout == "NCHW" else [0, 2, 3, 1])
    if pre.crop_mode in TASK_CROP_MODES:
        x = task_resize(g, x, pre, opset, layout, _resize)
    else:
        x = _resize_and_crop(g, x, pre, opset, layout)
    if pre.channels == "BGR" and pre.model_channels == 3:
        x = g.op("Gather", x, g.const([2, 1, 0]), axis=1)
    _normalise(g, x, pre)
    g.nodes[-1].output[0] = OUTPUT
    spatial = [pre.height or "height", pre.width or "width"]
    shape = [pre.batch, *spatial, 3] if pre.layout == "NHWC" else [pre.batch, 3, *spatial]
    image = helper.make_tensor_value_info(
        input_name, TensorProto.UINT8 if pre.dtype == "uint8" else _FLOAT, shape
    )
    tensor = helper.make_tensor_value_info(
        OUTPUT, _FLOATS[pre.output_dtype], [pre.batch, pre.model_channels, *pre.output_size]
    )
    graph = helper.make_graph(g.nodes, "preprocess", [image], [tensor], g.constants)
    opsets = [helper.make_opsetid("", opset)]
    ir_version = ir_version or helper.find_min_ir_version_for(opsets)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def _resamples(pre: Preprocessing) -> bool:
    resizes = pre.crop_mode != "none"
    return resizes and pre.antialias and pre.interpolation in ("bicubic", "bilinear")


def _resize_and_crop(g: _Builder, x: str, pre: Preprocessing, opset: int, layout: str) -> str:
    """[N, 3, crop_h, crop_w] from ``x`` in ``layout``: resized and centre-cropped as timm does."""
    crop = list(pre.crop_size)
    if pre.height is not None or pre.crop_mode == "squash":  # sizes known: fold to constants
        size = pre.resized(pre.height or 1, pre.width or 1)
        start = pre.crop_start(*size)
        sizes, starts = g.const(size), g.const(start)
        ends = g.const([s + c for s, c in zip(start, crop, strict=True)])
    else:
        first = 1 if layout == "NHWC" else 2
        hw = g.op("Slice", g.op("Shape", x), g.const([first]), g.const([first + 2]))
        sizes = _dynamic_size(g, hw, pre)
        offset = g.op("Cast", g.op("Sub", sizes, g.const(crop)), to=_FLOAT)
        # ONNX Round is half-to-even, like the Python round() in torchvision's CenterCrop
        half = g.op("Round", g.op("Div", offset, g.const(2.0, "float32")))
        starts = g.op("Cast", half, to=_INT64)
        ends = g.op("Add", starts, g.const(crop))
    sizes = g.op("Identity", sizes)
    g.nodes[-1].output[0] = sizes = RESIZED_SIZE  # named: a test reads the arithmetic's result
    if _resamples(pre):
        if opset < 13:
            raise ValueError("the antialiased resize needs opset 13 or newer: set antialias=False")
        frame = (pre.height, pre.width) if pre.height is not None else None
        channels = pre.model_channels
        return resize_crop(g, x, sizes, starts, pre.crop_size, pre.interpolation, frame, channels)
    x = _resize(g, x, sizes, pre, opset)
    return g.op("Slice", x, starts, ends, g.const([2, 3]))


def _dynamic_size(g: _Builder, hw: str, pre: Preprocessing) -> str:
    sh, sw = pre.scale_size
    if sh == sw:  # int(S * side / short): integer division of positive ints is exact
        short = g.op("ReduceMin", hw, keepdims=1)
        return g.op("Div", g.op("Mul", hw, g.const([sh])), short)
    # ResizeKeepRatio does this in Python floats: float64 gives the same bits, and ONNX
    # Round rounds half to even like round()
    hw64 = g.op("Cast", hw, to=_DOUBLE)
    ratio = g.op("ReduceMin", g.op("Div", hw64, g.const([sh, sw], "float64")), keepdims=1)
    return g.op("Cast", g.op("Round", g.op("Div", hw64, ratio)), to=_INT64)


def _resize(g: _Builder, x: str, sizes: str, pre: Preprocessing, opset: int) -> str:
    """Without antialias (``antialias: false``, or opset < 13), ONNX Resize as close to PIL as
    it goes: filters sample at pixel centres (half_pixel), taps outside the image are skipped
    and the rest renormalised (exclude_outside), bicubic with a = -0.5. Antialiased linear and
    cubic resizing is ``resample_graph``'s."""
    if pre.interpolation == "nearest":
        return nearest(g, x, sizes)
    attrs: dict[str, Any] = {"coordinate_transformation_mode": "half_pixel", "mode": "linear"}
    if pre.interpolation == "bicubic":  # ORT refuses exclude_outside for plain linear
        attrs.update(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1)
    # sizes covers every dim, not only axes=[2, 3]: there is no axes attribute before opset 18,
    # and ONNX Runtime's NCHWc layout optimiser misreads a 2-element sizes with axes (it broke
    # composed INT8 models at load, MEASUREMENTS #12)
    batch_channels = g.op("Slice", g.op("Shape", x), g.const([0]), g.const([2]))
    sizes = g.op("Concat", batch_channels, sizes, axis=0)
    # opsets 11-12 require the roi and scales inputs, empty when sizes is given
    unused = "" if opset >= 13 else g.const([], "float32")
    x = g.op("Resize", x, unused, unused, sizes, **attrs)
    # PIL resamples uint8 images: round and clip like it does, so bicubic overshoot is cut
    return g.op("Clip", g.op("Round", x), g.const(0.0, "float32"), g.const(255.0, "float32"))


def _normalise(g: _Builder, x: str, pre: Preprocessing) -> str:
    # ToTensor then Normalize, op for op: equal pixels give bit-equal floats
    x = g.op("Div", x, g.const(255.0, "float32"))
    x = g.op("Sub", x, g.const([[[m]] for m in pre.mean], "float32"))
    x = g.op("Div", x, g.const([[[s]] for s in pre.std], "float32"))
    if pre.output_dtype != "float32":  # e.g. a float16 model
        x = g.op("Cast", x, to=_FLOATS[pre.output_dtype])
    return x
