"""Finite, bounded numbers for recipe fields.

A recipe is untrusted input: a count of a billion random inputs hangs a run, a std of 1e-320
or a mean of 1e300 turns every pixel into inf. Each bound here is far above what a real recipe
needs, is stated in the field's description (so in the schema and the editor), and is
refused at validation, naming the field, before anything runs. (Non-finite numbers, ``.nan``
and ``.inf``, are refused for every number field by ``strict_fields``.)
"""

from __future__ import annotations

__all__ = [
    "MAX_BATCH",
    "MAX_CLASSES",
    "MAX_CHECK_INPUTS",
    "MAX_DIM",
    "MAX_IMAGE_SIDE",
    "MAX_MEAN",
    "MAX_SAMPLES",
    "MAX_STD",
    "MAX_THREADS",
    "MIN_STD",
    "ChannelMean",
    "ChannelStd",
    "ImageSide",
]

from typing import Annotated

from pydantic import Field

MAX_IMAGE_SIDE = 8192
"""Largest model input height or width: 8K pixels; a 100000x100000 float tensor is 120 GB."""
MAX_BATCH = 1024
"""Largest batch size a stage builds or times."""
MAX_THREADS = 1024
"""Most threads a runtime is given."""
MAX_SAMPLES = 10_000
"""Most calibration samples (each is decoded, preprocessed and run through the model)."""
MAX_CLASSES = 1_000_000
"""Largest classifier (num_classes); the largest real label sets have ~22k classes."""
MAX_CHECK_INPUTS = 100
"""Most random inputs a check runs (onnxsim's check_n, parity's random_inputs)."""
MAX_DIM = 1_000_000
"""Largest size of one dimension of a reshaped input (OpenVINO input_shape)."""
MAX_MEAN = 1000.0
"""Largest |mean| of a channel (0..1 scale: real means are 0..1)."""
MIN_STD, MAX_STD = 1e-6, 1000.0
"""Range of a channel's std (0..1 scale; 1/255 for a model that takes 0..255 values): a
smaller one overflows float32 to inf."""

ImageSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
ChannelMean = Annotated[float, Field(ge=-MAX_MEAN, le=MAX_MEAN)]
ChannelStd = Annotated[float, Field(ge=MIN_STD, le=MAX_STD)]
