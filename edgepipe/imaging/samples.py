"""Real sample images: a folder given in a recipe, or photographs that installed packages ship.

The default set is the everyday photos among scikit-image's public-domain images, plus the
portrait matplotlib ships: different sizes and aspect ratios (what a preprocessing check needs),
and scenes an ImageNet classifier recognises, so that class gates mean something. The
astronomy, microscopy and retina images are left out: an ImageNet model is undecided on them
(top-1 probability 0.08-0.13 on EfficientNet-Lite0, MEASUREMENTS #11). They are read from the
installed packages, never downloaded.
"""

from __future__ import annotations

__all__ = [
    "IMAGE_SUFFIXES",
    "BUNDLED_PHOTO_TOOLS",
    "DEFAULT_PHOTOS",
    "describe_images",
    "find_images",
    "fit_fixed_size",
    "load_images",
    "open_images",
    "raw_pixels",
]

from pathlib import Path
from typing import Any

from edgepipe.errors import StageError

BUNDLED_PHOTO_TOOLS = ("scikit-image", "matplotlib")
"""The distributions the default photos come from: part of the key of a stage that uses them."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# (name, scikit-image loader); grace_hopper comes from matplotlib's sample data
DEFAULT_PHOTOS = (
    "chelsea",
    "coffee",
    "rocket",
    "astronaut",
    "camera",
    "clock",
    "coins",
    "moon",
    "motorcycle",
    "grace_hopper",
)
_DEFAULT_SOURCE = "photos bundled with scikit-image and matplotlib"


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, so runs are reproducible."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def load_images(folder: Path | None, limit: int) -> list[tuple[str, Any]]:
    """Up to ``limit`` (name, RGB PIL image) pairs from ``folder``, or the bundled photos."""
    if folder is None:
        return _bundled_photos(limit)
    paths = find_images(folder)
    if not paths:
        raise StageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return open_images(paths[:limit])


def open_images(paths: list[Path]) -> list[tuple[str, Any]]:
    """(file name, RGB PIL image) per path; an unreadable file is a StageError naming it."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append((path.name, image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise StageError(f"cannot read image {path}: {exc}") from None
    return images


def describe_images(folder: Path | None, names: list[str]) -> dict[str, Any]:
    """Which images a report used: for a report to say, and a reader to check."""
    return {"source": str(folder) if folder else _DEFAULT_SOURCE, "names": list(names)}


def _bundled_photos(limit: int) -> list[tuple[str, Any]]:
    try:
        import skimage.data
    except ImportError:
        raise StageError(
            "no image folder given and scikit-image is not installed: "
            "set `images:` or pip install scikit-image"
        ) from None
    from PIL import Image

    def photo(name: str) -> Any:
        if name == "grace_hopper":
            from matplotlib import cbook

            with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
                return image.convert("RGB")
        if name == "motorcycle":
            return Image.fromarray(skimage.data.stereo_motorcycle()[0])
        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")

    return [(name, photo(name)) for name in DEFAULT_PHOTOS[:limit]]


def fit_fixed_size(image: Any, preprocessing: dict[str, Any] | None) -> Any:
    """Resize a photo to a composed graph's fixed input size (no-op for dynamic sizes)."""
    pre = preprocessing or {}
    if pre.get("height") and pre.get("width"):
        from PIL import Image

        return image.resize((pre["width"], pre["height"]), Image.Resampling.BICUBIC)
    return image


def raw_pixels(image: Any, preprocessing: dict[str, Any]) -> Any:
    """A [1, ...] array of raw pixels in a composed graph's layout, dtype and channel order."""
    import numpy as np

    array = np.asarray(image.convert("RGB"))
    if preprocessing.get("channels") == "BGR":
        array = array[..., ::-1]
    if preprocessing.get("layout") == "NCHW":
        array = array.transpose(2, 0, 1)
    array = np.ascontiguousarray(array[None])
    return array.astype(np.float32) if preprocessing.get("dtype") == "float32" else array
