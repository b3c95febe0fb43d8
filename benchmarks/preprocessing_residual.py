"""Preprocessing residual: the compose-preprocessing graph vs timm's PIL eval transform.

    .venv/bin/python benchmarks/preprocessing_residual.py [--size 224] [--crop-pct 0.875]

For each interpolation × crop mode × antialias setting, runs the preprocessing graph (ONNX
Runtime, CPU) on scikit-image's bundled photos and compares its tensor with
``timm.data.create_transform(..., is_training=False)`` on the same photo. Prints a Markdown
table: max and mean absolute difference, in normalised units (what the model sees) and in grey
levels (0..255, before normalisation). Max is over all photos; mean is over all pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import skimage.data
from PIL import Image
from timm.data import create_transform

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgepipe.imaging.preprocess_graph import Preprocessing, build_preprocessing  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def residual(pre: Preprocessing, photos: dict[str, np.ndarray]) -> tuple[float, ...]:
    """(max, mean) |graph - timm| in normalised units, then in grey levels."""
    model = build_preprocessing(pre, opset=18)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    transform = create_transform(
        input_size=(3, *pre.crop_size),
        interpolation=pre.interpolation,
        mean=pre.mean,
        std=pre.std,
        crop_pct=pre.crop_pct,
        crop_mode=pre.crop_mode,
        is_training=False,
    )
    scale = np.array(pre.std)[:, None, None] * 255  # normalised units → grey levels
    errors = []
    for image in photos.values():
        expected = transform(Image.fromarray(image)).numpy()
        (actual,) = session.run(None, {"image": pre.feed(image)})
        errors.append(np.abs(actual[0] - expected))
    normalised = np.stack(errors)
    levels = normalised * scale
    return normalised.max(), normalised.mean(), levels.max(), levels.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="Crop size (square).")
    parser.add_argument("--crop-pct", type=float, default=0.875, help="timm crop_pct.")
    args = parser.parse_args()
    photos = {name: getattr(skimage.data, name)() for name in PHOTOS}
    sizes = ", ".join(f"{name} {img.shape[1]}x{img.shape[0]}" for name, img in photos.items())
    print(f"crop {args.size}, crop_pct {args.crop_pct}, ImageNet mean/std; photos: {sizes}\n")
    print(
        "| interpolation | crop_mode | antialias | max abs (normalised) | mean abs (normalised) "
        "| max abs (grey levels) | mean abs (grey levels) |"
    )
    print("|---|---|---|---|---|---|---|")
    settings = [
        (interpolation, mode, antialias)
        for interpolation in ("bicubic", "bilinear")
        for mode in ("center", "squash")
        for antialias in (True, False)
    ] + [("nearest", "center", False), ("nearest", "squash", False)]
    for interpolation, mode, antialias in settings:
        pre = Preprocessing(
            crop_size=(args.size, args.size),
            mean=MEAN,
            std=STD,
            interpolation=interpolation,
            crop_pct=args.crop_pct,
            crop_mode=mode,
            antialias=antialias,
        )
        values = residual(pre, photos)
        cells = " | ".join(f"{v:.4f}" for v in values)
        flag = "n/a" if interpolation == "nearest" else ("on" if antialias else "off")
        print(f"| {interpolation} | {mode} | {flag} | {cells} |")


if __name__ == "__main__":
    main()
