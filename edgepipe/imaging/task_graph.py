"""The crop modes of detectors, segmenters and text recognisers (letterbox, height, none) and
grayscale as ONNX ops, for ``preprocess_graph``; ``data_config`` says what each computes and
``task_transforms`` is the reference they match.

- letterbox: ``scale = min(H / h, W / w)`` and the resized size in float64 (Python's floats:
  same bits), ONNX Round (half to even, like Python's round()), clamped to 1..H, 1..W; resized
  like the other modes (antialiased bilinear/bicubic: ``resample_graph`` over the whole H x W
  box, then sliced to the resized size), then ``Pad`` with the pad value: top ``(H - nh) // 2``
  (non-negative integers: ONNX Div floors), left likewise;
- height: width ``max(1, round(w * H / h))``: ``w * H`` exact in int64, divided in float64,
  which rounds as Python's int / int does; the antialiased resize computes the run-time width;
- none: nothing;
- grayscale: PIL's ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` in float32, exact for
  0..255 inputs (every partial sum is an integer below 2**24; dividing by 65536 is exact).

A fixed image size folds every size and pad to constants.
"""

from __future__ import annotations

__all__ = ["luma", "task_resize"]

from collections.abc import Callable
from typing import Any

from edgepipe.imaging.data_config import LUMA_WEIGHTS, letterbox_place
from edgepipe.imaging.resample_graph import resize_crop

_INT64, _DOUBLE = 7, 11  # onnx.TensorProto values; onnx is imported lazily


def luma(g: Any, x: str, pre: Any, opset: int) -> str:
    """[N, 1, H, W] (or [N, H, W, 1]) luma of float pixels ``x`` in the raw image's layout and
    channel order, as PIL's ``convert("L")`` computes it."""
    weights = LUMA_WEIGHTS[::-1] if pre.channels == "BGR" else LUMA_WEIGHTS
    axis = 3 if pre.layout == "NHWC" else 1
    per_channel = [float(w) for w in weights] if axis == 3 else [[[float(w)]] for w in weights]
    weighted = g.op("Mul", x, g.const(per_channel, "float32"))
    if opset >= 13:
        total = g.op("ReduceSum", weighted, g.const([axis]), keepdims=1)
    else:
        total = g.op("ReduceSum", weighted, axes=[axis], keepdims=1)
    total = g.op("Add", total, g.const(32768.0, "float32"))
    return g.op("Floor", g.op("Div", total, g.const(65536.0, "float32")))


def task_resize(g: Any, x: str, pre: Any, opset: int, layout: str, resize: Callable) -> str:
    """[N, C, H', W'] pixel levels (0..255) from ``x`` in ``layout`` for ``pre.crop_mode``
    letterbox, height or none; ``resize(g, x, sizes, pre, opset)`` is the plain (not
    antialiased) resize, NCHW."""
    if pre.crop_mode == "none":
        return x if layout == "NCHW" else g.op("Transpose", x, perm=[0, 3, 1, 2])
    box = tuple(pre.crop_size)
    fixed = (pre.height, pre.width) if pre.height is not None else None
    resized = pre.resized(*fixed) if fixed else None
    if resized:
        sizes, crop = g.const(list(resized)), resized
    elif pre.crop_mode == "letterbox":
        sizes, crop = _letterbox_sizes(g, _image_size(g, x, layout), box), box
    else:
        width = _height_width(g, _image_size(g, x, layout), box[0])
        sizes, crop = g.op("Concat", g.const([box[0]]), width, axis=0), (box[0], width)
    if layout == "NHWC":  # antialiased: PIL's resize (letterbox: the whole box, then sliced)
        channels = pre.model_channels
        x = resize_crop(g, x, sizes, g.const([0, 0]), crop, pre.interpolation, fixed, channels)
        if pre.crop_mode == "letterbox" and not resized:  # computed the box: keep the image
            x = g.op("Slice", x, g.const([0, 0]), sizes, g.const([2, 3]))
    else:
        x = resize(g, x, sizes, pre, opset)
    if pre.crop_mode != "letterbox":
        return x
    pad_value = g.const(float(pre.pad_value), "float32")
    return g.op("Pad", x, _pads(g, sizes, box, resized), pad_value)


def _image_size(g: Any, x: str, layout: str) -> str:
    first = 1 if layout == "NHWC" else 2
    return g.op("Slice", g.op("Shape", x), g.const([first]), g.const([first + 2]))


def _letterbox_sizes(g: Any, hw: str, box: tuple[int, int]) -> str:
    hw64 = g.op("Cast", hw, to=_DOUBLE)
    scale = g.op("ReduceMin", g.op("Div", g.const(box, "float64"), hw64), keepdims=1)
    sizes = g.op("Cast", g.op("Round", g.op("Mul", hw64, scale)), to=_INT64)
    return g.op("Min", g.op("Max", sizes, g.const([1])), g.const(box))


def _height_width(g: Any, hw: str, height: int) -> str:
    in_h = g.op("Cast", g.op("Slice", hw, g.const([0]), g.const([1])), to=_DOUBLE)
    in_w = g.op("Slice", hw, g.const([1]), g.const([2]))
    scaled = g.op("Cast", g.op("Mul", in_w, g.const([height])), to=_DOUBLE)
    width = g.op("Cast", g.op("Round", g.op("Div", scaled, in_h)), to=_INT64)
    return g.op("Max", width, g.const([1]))


def _pads(g: Any, sizes: str, box: tuple[int, int], fixed: tuple[int, int] | None) -> str:
    """Pad's [x1_begin, x2_begin, ..., x1_end, ...] for [N, C, H, W]: the canvas around."""
    if fixed:
        top, left = letterbox_place(fixed, box)
        bottom, right = box[0] - fixed[0] - top, box[1] - fixed[1] - left
        return g.const([0, 0, top, left, 0, 0, bottom, right])
    spare = g.op("Sub", g.const(box), sizes)
    before = g.op("Div", spare, g.const([2]))
    after = g.op("Sub", spare, before)
    return g.op("Concat", g.const([0, 0]), before, g.const([0, 0]), after, axis=0)
