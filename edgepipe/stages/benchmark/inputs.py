"""What a benchmark feeds each runtime: real photos as its batches (raw camera frames for a
composed graph, timm's tensors otherwise), and the host (PIL) or GPU (CuPy) preprocessing time
that end-to-end latency adds."""

from __future__ import annotations

__all__ = [
    "FRAME_SIZE",
    "prepare_batches",
    "time_gpu_preprocessing",
    "time_preprocessing",
]

import importlib.util
import time
from typing import Any

from edgepipe.errors import StageError
from edgepipe.imaging.samples import raw_pixels
from edgepipe.imaging.timm_eval import timm_eval_transform
from edgepipe.runtimes import Runtime

# Composed models take camera-sized frames; one size for all keeps batches stackable.
FRAME_SIZE = (640, 480)


def prepare_batches(
    target: Runtime, images: list[Any], data_config: dict[str, Any], batch_size: int
) -> list[Any]:
    """Real photos as this target's input: raw frames for composed graphs, else timm's tensors."""
    import numpy as np

    if target.composed:
        pre = target.artifact.meta["preprocessing"]
        size = (pre["width"], pre["height"]) if pre.get("height") else FRAME_SIZE
        singles = [raw_pixels(image.resize(size), pre) for image in images]
    else:
        transform = timm_eval_transform(data_config)
        if data_config.get("crop_mode") in ("height", "none"):
            # the tensor's size follows the photo's: one frame (the traced input size) for all,
            # so batches stack and every row times the same work
            height, width = data_config["input_size"][-2:]
            images = [image.resize((width, height)) for image in images]
        singles = [transform(image).unsqueeze(0).numpy() for image in images]
    count = max(1, len(singles) // batch_size) * batch_size
    cycled = [singles[i % len(singles)] for i in range(max(count, batch_size))]
    return [np.concatenate(cycled[i : i + batch_size]) for i in range(0, len(cycled), batch_size)]


def time_gpu_preprocessing(
    images: list[Any], data_config: dict[str, Any], log, rounds: int = 5
) -> float | None:
    """Mean milliseconds of the same preprocessing in CuPy on CUDA device 0, for rows whose
    model runs there; None (host PIL is used) without CuPy or for a transform it lacks."""
    if importlib.util.find_spec("cupy") is None:
        log.info("CuPy is not installed: GPU rows count host (PIL) preprocessing")
        return None
    import cupy
    import numpy as np

    from edgepipe.imaging.gpu_preprocessing import TimmPreprocessor

    try:
        preprocess = TimmPreprocessor(data_config, device_id=0)
    except StageError as exc:
        log.warning("%s: GPU rows count host (PIL) preprocessing", exc)
        return None
    frames = [np.asarray(image.resize(FRAME_SIZE).convert("RGB")) for image in images]
    preprocess(frames[0])  # the first call compiles CuPy's kernels
    cupy.cuda.Device(0).synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        for frame in frames:
            preprocess(frame)
    cupy.cuda.Device(0).synchronize()
    return (time.perf_counter() - started) * 1000.0 / (rounds * len(frames))


def time_preprocessing(images: list[Any], data_config: dict[str, Any], rounds: int = 5) -> float:
    """Mean milliseconds of timm's host preprocessing (PIL) per image from a camera frame."""
    transform = timm_eval_transform(data_config)
    frames = [image.resize(FRAME_SIZE) for image in images]
    started = time.perf_counter()
    for _ in range(rounds):
        for frame in frames:
            transform(frame)
    return (time.perf_counter() - started) * 1000.0 / (rounds * len(frames))
