"""Calibration samples for post-training quantization: real images through the model's own
preprocessing (or raw pixels for a composed model), a count and a seed."""

from __future__ import annotations

__all__ = ["CalibrationSpec", "calibration_problems", "calibration_samples"]

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.errors import StageError
from edgepipe.stages.inference import timm_eval_transform
from edgepipe.stages.samples import (
    IMAGE_SUFFIXES,
    find_images,
    fit_fixed_size,
    load_images,
    raw_pixels,
)


class CalibrationSpec(BaseModel):
    """Where calibration data comes from; its content is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: Path | None = Field(
        default=None,
        description=(
            "Folder of representative images (relative to the recipe). Default: scikit-image's "
            "bundled photos — fine for a smoke test, not for a model you ship."
        ),
    )
    count: int = Field(
        default=32,
        ge=1,
        description=(
            "Calibration samples; fewer images than this are reused with seeded random crops."
        ),
    )
    seed: int = Field(default=0, description="Seed for sample order and crops.")
    random: bool = Field(
        default=False,
        description=(
            "Calibrate on random tensors instead of images (warns: ranges will be wrong)."
        ),
    )


def calibration_problems(spec: CalibrationSpec, recipe_dir: Path) -> list[str]:
    """Preflight: a folder that is empty or holds unreadable images fails before quantizing."""
    if spec.random or spec.images is None:
        return []
    from PIL import Image, UnidentifiedImageError

    folder = recipe_dir / spec.images
    paths = find_images(folder)
    if not paths:
        return [f"calibration folder {spec.images} holds no images ({', '.join(IMAGE_SUFFIXES)})"]
    problems = []
    for path in paths[: spec.count]:
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError) as exc:
            problems.append(f"calibration image {path} is not a readable image: {exc}")
    return problems


def calibration_samples(
    spec: CalibrationSpec, meta: dict[str, Any], recipe_dir: Path, log
) -> list[Any]:
    """``spec.count`` model inputs ([1, ...] arrays) matching the artifact described by ``meta``."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    if spec.random:
        log.warning(
            "calibrating on random tensors (calibration.random: true): activation ranges "
            "will not match real data and accuracy will suffer"
        )
        return [_random_input(meta, rng) for _ in range(spec.count)]
    folder = recipe_dir / spec.images if spec.images else None
    images = [image for _, image in load_images(folder, spec.count)]
    if not images:
        raise StageError("no calibration images")
    chosen = [
        images[i % len(images)] if i < len(images) else _random_crop(images[i % len(images)], rng)
        for i in range(spec.count)
    ]
    pre = meta.get("preprocessing")
    if pre:  # a composed model takes raw pixels in its own layout
        return [raw_pixels(fit_fixed_size(image, pre), pre) for image in chosen]
    transform = timm_eval_transform(meta["data_config"])  # built once, not per sample
    return [transform(image).unsqueeze(0).numpy() for image in chosen]


def _random_crop(image: Any, rng) -> Any:
    """A seeded 60-100 % crop: extra samples when the folder has fewer images than ``count``."""
    width, height = image.size
    scale = rng.uniform(0.6, 1.0)
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


def _random_input(meta: dict[str, Any], rng) -> Any:
    import numpy as np

    pre = meta.get("preprocessing")
    if pre:
        height, width = pre.get("height") or 224, pre.get("width") or 224
        shape = (
            (1, height, width, 3) if pre.get("layout", "NHWC") == "NHWC" else (1, 3, height, width)
        )
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        return array.astype(np.float32) if pre.get("dtype") == "float32" else array
    return rng.standard_normal((1, *meta["data_config"]["input_size"])).astype(np.float32)
