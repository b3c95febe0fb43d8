"""Real sample images: a folder given in a recipe, or scikit-image's bundled photographs.

scikit-image ships a few public-domain photos of different sizes and aspect ratios, which is
what a preprocessing check needs; they are read from the installed package, never downloaded.
"""

from __future__ import annotations

__all__ = [
    "IMAGE_SUFFIXES",
    "SKIMAGE_PHOTOS",
    "find_images",
    "fit_fixed_size",
    "load_images",
    "raw_pixels",
]

from pathlib import Path
from typing import Any

from edgepipe.errors import StageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, so runs are reproducible."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def load_images(folder: Path | None, limit: int) -> list[tuple[str, Any]]:
    """Up to ``limit`` (name, RGB PIL image) pairs from ``folder``, or skimage's photos."""
    from PIL import Image, UnidentifiedImageError

    if folder is None:
        return _skimage_photos(limit)
    paths = find_images(folder)
    if not paths:
        raise StageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    images = []
    for path in paths[:limit]:
        try:
            with Image.open(path) as image:
                images.append((path.name, image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise StageError(f"cannot read image {path}: {exc}") from None
    return images


def _skimage_photos(limit: int) -> list[tuple[str, Any]]:
    try:
        import skimage.data
    except ImportError:
        raise StageError(
            "no image folder given and scikit-image is not installed: "
            "set `images:` or pip install scikit-image"
        ) from None
    from PIL import Image

    return [
        (name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        for name in SKIMAGE_PHOTOS[:limit]
    ]


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
