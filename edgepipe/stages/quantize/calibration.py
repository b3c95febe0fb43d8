"""Calibration samples for post-training quantization: real images through the model's own
preprocessing (or raw pixels for a composed model), a count and a seed.

A folder larger than ``count`` is sampled evenly (seeded), not cut at its first files: sorted
ImageFolder trees would otherwise calibrate on their first classes only. A folder (or the
bundled photos) smaller than ``count`` is stretched with seeded crops and flips; the stage
warns when the distinct images are few, since ranges then follow a handful of scenes.
"""

from __future__ import annotations

__all__ = [
    "CalibrationSpec",
    "calibration_problems",
    "calibration_samples",
    "describe_calibration",
    "model_inputs",
]

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.errors import StageError
from edgepipe.imaging.samples import (
    IMAGE_SUFFIXES,
    describe_images,
    find_images,
    fit_fixed_size,
    load_images,
    open_images,
    raw_pixels,
)
from edgepipe.imaging.timm_eval import timm_eval_transform
from edgepipe.spec_bounds import MAX_SAMPLES

_FEW_DISTINCT = 32  # below this many distinct images, ranges follow a handful of scenes


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
        default=64,
        ge=1,
        le=MAX_SAMPLES,
        description=(
            f"Calibration samples (at most {MAX_SAMPLES}). A larger folder is sampled evenly; "
            "fewer images are reused with seeded random crops and flips."
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

    paths = _chosen_paths(spec, recipe_dir)
    if not paths:
        return [f"calibration folder {spec.images} holds no images ({', '.join(IMAGE_SUFFIXES)})"]
    problems = []
    for path in paths:
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
    images = [image for _, image in _distinct_images(spec, recipe_dir, rng)]
    if not images:
        raise StageError("no calibration images")
    if len(images) < min(spec.count, _FEW_DISTINCT):
        log.warning(
            "calibrating on %d distinct images (stretched to %d samples with crops and flips)%s: "
            "fine to try, but for a model you ship point calibration.images at a folder of "
            "100+ images of your own data",
            len(images),
            spec.count,
            "" if spec.images else " that scikit-image and matplotlib ship",
        )
    chosen = [
        images[i] if i < len(images) else _random_view(images[i % len(images)], rng)
        for i in range(spec.count)
    ]
    return model_inputs(chosen, meta)


def describe_calibration(spec: CalibrationSpec, recipe_dir: Path) -> dict[str, Any]:
    """What the samples were drawn from, for the artifact's meta and the report."""
    if spec.random:
        return {"source": "random tensors", "samples": spec.count}
    import numpy as np

    chosen = _distinct_images(spec, recipe_dir, np.random.default_rng(spec.seed), load=False)
    described = describe_images(spec.images, [name for name, _ in chosen])
    return {"source": described["source"], "distinct_images": len(chosen), "samples": spec.count}


def model_inputs(images: list[Any], meta: dict[str, Any]) -> list[Any]:
    """Photos as the artifact's inputs: raw pixels for a composed model, else timm's tensors."""
    pre = meta.get("preprocessing")
    if pre:  # a composed model takes raw pixels in its own layout
        return [raw_pixels(fit_fixed_size(image, pre), pre) for image in images]
    transform = timm_eval_transform(meta["data_config"])  # built once, not per sample
    return [transform(image).unsqueeze(0).numpy() for image in images]


def _distinct_images(spec: CalibrationSpec, recipe_dir: Path, rng, load: bool = True) -> list:
    """Up to ``count`` (name, image) pairs: the whole folder, or an even seeded sample of it."""
    if spec.images is None:
        photos = load_images(None, spec.count)
        return photos if load else [(name, None) for name, _ in photos]
    paths = _chosen_paths(spec, recipe_dir)
    return open_images(paths) if load else [(p.name, None) for p in paths]


def _chosen_paths(spec: CalibrationSpec, recipe_dir: Path) -> list[Path]:
    """The folder's images that calibration uses: all, or ``count`` of them drawn evenly."""
    import numpy as np

    paths = find_images(recipe_dir / spec.images)
    if len(paths) <= spec.count:
        return paths
    picked = np.random.default_rng(spec.seed).choice(len(paths), size=spec.count, replace=False)
    return [paths[i] for i in sorted(picked)]


def _random_view(image: Any, rng) -> Any:
    """A seeded 60-100 % crop, flipped half the time: extra samples from a few images."""
    from PIL import Image

    width, height = image.size
    scale = rng.uniform(0.6, 1.0)
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    view = image.crop((left, top, left + w, top + h))
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


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
