"""Real sample images: a folder given in a recipe, or scikit-image's bundled photographs.

scikit-image ships a few public-domain photos of different sizes and aspect ratios, which is
what a preprocessing check needs; they are read from the installed package, never downloaded.
"""

from __future__ import annotations

__all__ = ["IMAGE_SUFFIXES", "SKIMAGE_PHOTOS", "find_images", "load_images"]

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
