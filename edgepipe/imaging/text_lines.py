"""Synthetic text lines: grayscale crops of short strings, rendered with Pillow's bundled font.

They are what an OCR recogniser (a CTC model such as ``pipelines/models/crnn.py``) trains on in
the test-suite, and the default sample images the parity stage feeds such a model. Only the
font Pillow ships is used (``ImageFont.load_default``; scalable since Pillow 10.1): CI machines
have no system fonts, and nothing may be downloaded. Each line varies a little (font size,
letter spacing, baseline, contrast, noise, blur) so that a model trained on them generalises
across lines, yet a line is a pure function of ``(text, height, seed)``.
"""

from __future__ import annotations

__all__ = ["DIGITS", "render_line", "sample_lines", "write_labelled_lines"]

import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

DIGITS = "0123456789"

# Font size as a fraction of the line height: digits are ~0.67 of the font size tall, so the
# glyphs fill roughly 45-65 % of the crop, as in a detector's text boxes.
_FONT_SIZE_RANGE = (0.68, 0.95)
_MAX_NOISE_SIGMA = 6.0  # grey levels
_MAX_BLUR_RADIUS = 0.7  # pixels


def render_line(text: str, height: int = 32, seed: int = 0) -> Any:
    """``text`` as a grayscale ("L") PIL image exactly ``height`` pixels high: dark text on a
    light background, as wide as the text plus a random margin. Deterministic."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    if height < 8:
        raise ValueError(f"a text line needs height >= 8, not {height}")
    # crc32, not hash(): str hashes change between interpreter runs
    rng = np.random.default_rng([seed & 0xFFFFFFFF, height, zlib.crc32(text.encode("utf-8"))])
    font = _font(round(height * rng.uniform(*_FONT_SIZE_RANGE)))
    spacing = int(rng.integers(-1, 3))  # extra pixels between characters
    advances = [font.getlength(char) + spacing for char in text]
    text_width = max(1, round(sum(advances) - (spacing if text else 0)))
    left, right = (int(v) for v in rng.integers(2, max(3, height // 3), size=2))
    width = left + text_width + right

    # Centre the font's cap-top..descender span, then shift the baseline by a pixel or two.
    _, top, _, bottom = font.getbbox("Hg", anchor="la")
    free = height - (bottom - top)
    shift = int(rng.integers(-2, 3))
    y = min(max(free // 2 + shift, 0), max(free, 0)) - top

    coverage = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(coverage)
    x = float(left)
    for char, advance in zip(text, advances, strict=True):
        draw.text((x, y), char, fill=255, font=font, anchor="la")
        x += advance

    background = rng.uniform(185.0, 250.0)
    ink = rng.uniform(10.0, 90.0)
    alpha = np.asarray(coverage, dtype=np.float32) / 255.0
    pixels = background + (ink - background) * alpha
    pixels += rng.normal(0.0, rng.uniform(0.0, _MAX_NOISE_SIGMA), size=pixels.shape)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    blur = rng.uniform(0.0, _MAX_BLUR_RADIUS)
    if blur > 0.25:  # below a quarter pixel a Gaussian blur changes nothing visible
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return image


def sample_lines(
    count: int,
    seed: int = 0,
    alphabet: str = DIGITS,
    min_length: int = 4,
    max_length: int = 8,
    height: int = 32,
) -> list[tuple[str, Any]]:
    """``count`` (text, image) pairs: random strings over ``alphabet`` of ``min_length`` to
    ``max_length`` characters, each rendered with its own seed. Deterministic in ``seed``."""
    import numpy as np

    if not alphabet:
        raise ValueError("sample_lines needs a non-empty alphabet")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, not {min_length}, {max_length}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x7E47])  # 0x7E47: not render_line's stream
    lines = []
    for _ in range(count):
        length = int(rng.integers(min_length, max_length + 1))
        text = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=length))
        lines.append((text, render_line(text, height, seed=int(rng.integers(0, 2**31)))))
    return lines


@lru_cache(maxsize=64)
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def write_labelled_lines(folder: Path, count: int, seed: int, alphabet: str = DIGITS) -> Path:
    """``count`` lines as ``NNN.png`` and ``labels.txt`` (``<file name><TAB><text>`` per line):
    the labelled folder ``evaluate`` reads for a text recogniser."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = []
    for index, (text, image) in enumerate(sample_lines(count, seed=seed, alphabet=alphabet)):
        image.save(folder / f"{index:03d}.png")
        labels.append(f"{index:03d}.png\t{text}")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return folder
