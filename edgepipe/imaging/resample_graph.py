"""PIL's antialiased resize as plain ONNX ops: exact on every runtime, and only the crop computed.

PIL (``ImagingResample``) resizes in two 1-D passes, horizontal first, rounding to uint8 in
between. Each output pixel ``o`` takes the input pixels ``[xmin, xmax)`` around its centre
``(o + 0.5) * scale`` with the filter widened by ``max(scale, 1)`` (antialias when
downscaling), weights normalised to sum 1. ONNX Resize's ``antialias`` approximates this, but
skips the rounding between passes, and OpenVINO's CPU plugin ignores it (openvino#35893).

Here each pass is a banded matrix product: the outputs come in blocks of ``_BLOCK``; a block
reads one window of ``K`` consecutive inputs (Gather), and a [block, K] weight matrix per block
(computed in the graph from the image size, as PIL computes it) makes the outputs (MatMul).
Only the outputs inside the centre crop are computed. Index arithmetic is exact (integers).
"""

from __future__ import annotations

__all__ = ["nearest", "resize_crop"]

import math

_BLOCK = 32  # outputs per block: MatMul over [_BLOCK, K] weights
_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}
_CUBIC_A = -0.5  # PIL's bicubic coefficient
_DOUBLE, _FLOAT, _INT64 = 11, 1, 7


def resize_crop(
    g,
    x: str,
    sizes: str,
    starts: str,
    crop: tuple[int, int | str],
    mode: str,
    frame: tuple[int, int] | None = None,
    channels: int = 3,
) -> str:
    """``x`` [N, H, W, C] resized to ``sizes`` (int64 [2]) and cropped at ``starts`` to
    ``crop``, like PIL's ``resize(..., BICUBIC/BILINEAR)`` then a crop, uint8-rounded; returns
    [N, C, crop_h, crop_w]. The crop's width may be known only at run time: an int64 [1]
    tensor's name. ``frame``: the image's fixed (height, width), if it has one (the
    coefficients then fold to constants); ``channels``: C, 3 or 1. No full-image transpose:
    moving single channel values costs more than the resize itself."""
    if frame is not None:
        in_h, in_w = g.const([frame[0]]), g.const([frame[1]])
    else:
        shape = g.op("Shape", x)
        in_h = g.op("Slice", shape, g.const([1]), g.const([2]))
        in_w = g.op("Slice", shape, g.const([2]), g.const([3]))

    def part(values: str, index: int) -> str:
        return g.op("Slice", values, g.const([index]), g.const([index + 1]))

    # horizontal first, as PIL does
    x = _horizontal(g, x, in_w, part(sizes, 1), part(starts, 1), crop[1], mode, channels)
    x = _to_uint8_levels(g, x)
    x = _vertical(g, x, in_h, part(sizes, 0), part(starts, 0), crop[0], mode, channels)
    return g.op("Transpose", _to_uint8_levels(g, x), perm=[0, 3, 1, 2])


def _horizontal(g, x: str, in_size: str, out_size: str, start: str, length, mode, channels):
    """[N, H, W, C] → [N, H, length, C]: per row, [_BLOCK, K] weights times a [K, C] window.
    ``length``: an int, or an int64 [1] tensor's name (then so is the number of blocks)."""
    if isinstance(length, str):
        blocks = g.op("Div", g.op("Add", length, g.const([_BLOCK - 1])), g.const([_BLOCK]))
    else:
        blocks = math.ceil(length / _BLOCK)
    index, weights = _coefficients(g, in_size, out_size, start, blocks, mode)
    window = g.op("Gather", x, index, axis=2)  # [N, H, blocks, K, C]
    out = g.op("MatMul", weights, window)  # [N, H, blocks, _BLOCK, C]
    if isinstance(length, str):
        out = g.op("Reshape", out, g.const([0, 0, -1, channels]))
        return g.op("Slice", out, g.const([0]), length, g.const([2]))
    out = g.op("Reshape", out, g.const([0, 0, blocks * _BLOCK, -1]))
    return g.op("Slice", out, g.const([0]), g.const([length]), g.const([2]))


def _vertical(g, x: str, in_size: str, out_size: str, start: str, length: int, mode, channels):
    """[N, H, W, C] → [N, length, W, C]: [_BLOCK, K] weights times a [K, W * C] window."""
    blocks = math.ceil(length / _BLOCK)
    index, weights = _coefficients(g, in_size, out_size, start, blocks, mode)
    window = g.op("Gather", x, index, axis=1)  # [N, blocks, K, W, C]
    out = g.op("MatMul", weights, g.op("Reshape", window, g.const([0, 0, 0, -1])))
    # [N, blocks, _BLOCK, W * C] → [N, blocks * _BLOCK, W, C]
    out = g.op("Reshape", out, g.const([0, blocks * _BLOCK, -1, channels]))
    return g.op("Slice", out, g.const([0]), g.const([length]), g.const([1]))


def _to_uint8_levels(g, x: str) -> str:
    """PIL stores each pass as uint8: rounds half up (its fixed point adds 0.5, then shifts)
    and clips (bicubic overshoots). ONNX Round would round halves to even: bilinear weights
    make exact halves often."""
    up = g.op("Floor", g.op("Add", x, g.const(0.5, "float32")))
    return g.op("Clip", up, g.const(0.0, "float32"), g.const(255.0, "float32"))


def _coefficients(g, in_size: str, out_size: str, start: str, blocks: int | str, mode: str):
    """Input windows ([blocks, K] int64) and weights ([blocks, _BLOCK, K] float32); ``blocks``
    an int, or an int64 [1] tensor's name.

    PIL's float64 arithmetic, done exactly in integers: with ``scale = in / out`` and the
    filter widened by ``max(in, out) / out``, every bound is a ratio of integers over
    ``2 * out``. (OpenVINO's converter also hangs folding float64 constants.)"""
    import numpy as np

    support = int(_SUPPORT[mode])
    widest = g.op("Max", in_size, out_size)
    twice_out = g.op("Mul", out_size, g.const([2]))
    reach = g.op("Mul", widest, g.const([2 * support]))  # 2 * support * out, over out
    if isinstance(blocks, str):  # known at run time only
        count = g.op("Squeeze", g.op("Mul", blocks, g.const([_BLOCK])))
        outputs = g.op("Add", g.op("Range", g.const(0), count, g.const(1)), start)
        block_starts = g.op("Range", g.const(0), count, g.const(_BLOCK))
        per_block = [-1, _BLOCK, 1]
    else:
        outputs = g.op("Add", g.const(np.arange(blocks * _BLOCK)), start)
        block_starts, per_block = None, [blocks, _BLOCK, 1]
    centre = g.op("Mul", g.op("Add", g.op("Mul", outputs, g.const([2])), g.const([1])), in_size)
    # int(centre - support + 0.5), at least 0: truncation only differs below 0
    first = g.op("Div", g.op("Add", g.op("Sub", centre, reach), out_size), twice_out)
    first = g.op("Max", first, g.const([0]))
    stop = g.op("Div", g.op("Add", g.op("Add", centre, reach), out_size), twice_out)
    stop = g.op("Min", stop, in_size)
    # one window per block, wide enough for its outputs' taps: ceil((B-1) scale + 2 support) + 2
    span = g.op("Add", g.op("Mul", in_size, g.const([_BLOCK - 1])), reach)
    span = g.op("Div", g.op("Add", span, g.op("Sub", out_size, g.const([1]))), out_size)
    span = g.op("Min", g.op("Add", span, g.const([2])), in_size)
    block_starts = block_starts or g.const(np.arange(blocks) * _BLOCK)
    block_first = g.op("Gather", first, block_starts, axis=0)
    window_start = g.op("Min", block_first, g.op("Sub", in_size, span))
    window_start = g.op("Max", window_start, g.const([0]))
    taps = g.op("Range", g.const(0), g.op("Squeeze", span), g.const(1))
    index = g.op("Add", g.op("Unsqueeze", window_start, g.const([1])), taps)  # [blocks, K]

    def per_output(values: str) -> str:  # [blocks * _BLOCK] → [blocks, _BLOCK, 1]
        return g.op("Reshape", values, g.const(per_block))

    tap = g.op("Unsqueeze", index, g.const([1]))  # [blocks, 1, K]
    # (tap + 0.5 - centre) / widen = ((2 tap + 1) out - 2 out centre) / (2 max(in, out))
    numerator = g.op("Mul", g.op("Add", g.op("Mul", tap, g.const([2])), g.const([1])), out_size)
    numerator = g.op("Sub", numerator, per_output(centre))
    denominator = g.op("Cast", g.op("Mul", widest, g.const([2])), to=_FLOAT)
    offset = g.op("Div", g.op("Cast", numerator, to=_FLOAT), denominator)
    inside = g.op(
        "And",
        g.op("GreaterOrEqual", tap, per_output(first)),
        g.op("Less", tap, per_output(stop)),
    )
    weight = g.op("Where", inside, _filter(g, offset, mode), g.const([0.0], "float32"))
    total = g.op("ReduceSum", weight, g.const([2]), keepdims=1)
    weight = g.op("Div", weight, g.op("Max", total, g.const([1e-12], "float32")))
    return index, weight


def _filter(g, t: str, mode: str) -> str:
    """PIL's bicubic (a = -0.5) or triangle filter at distances ``t``."""
    x = g.op("Abs", t)
    one, two = g.const([1.0], "float32"), g.const([2.0], "float32")
    zero = g.const([0.0], "float32")
    if mode == "bilinear":
        return g.op("Max", g.op("Sub", one, x), zero)
    a = _CUBIC_A

    def poly(*coefficients: float) -> str:  # Horner: ((c0 x + c1) x + c2) x + c3
        value = g.const([coefficients[0]], "float32")
        for c in coefficients[1:]:
            value = g.op("Add", g.op("Mul", value, x), g.const([c], "float32"))
        return value

    near = poly(a + 2, -(a + 3), 0.0, 1.0)  # |x| < 1
    far = poly(a, -5 * a, 8 * a, -4 * a)  # 1 <= |x| < 2
    return g.op("Where", g.op("Less", x, one), near, g.op("Where", g.op("Less", x, two), far, zero))


def nearest(g, x: str, sizes: str) -> str:
    """PIL's nearest (ImagingScaleAffine) takes pixel int(p), p summed from s/2 in float64
    steps of s = in/out. Resize (nearest) breaks the many exact ties its own way (6-20% of
    pixels differ at 512->224), so gather instead: CumSum adds in PIL's order, same bits."""
    shape = g.op("Shape", x)
    for axis in (2, 3):
        n_in = g.op("Cast", g.op("Slice", shape, g.const([axis]), g.const([axis + 1])), to=_DOUBLE)
        n_out = g.op("Slice", sizes, g.const([axis - 2]), g.const([axis - 1]))
        step = g.op("Div", n_in, g.op("Cast", n_out, to=_DOUBLE))
        rest = g.op("Expand", step, g.op("Sub", n_out, g.const([1])))
        steps = g.op("Concat", g.op("Mul", step, g.const([0.5], "float64")), rest, axis=0)
        position = g.op("CumSum", steps, g.const(0))
        x = g.op("Gather", x, g.op("Cast", g.op("Floor", position), to=_INT64), axis=axis)
    return x
