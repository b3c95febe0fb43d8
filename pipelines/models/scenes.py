"""Synthetic scenes of squares, circles and triangles on noisy gradients, with their boxes and
masks: what the shapes detector and segmenter (``shapes.py``) train on, and the labelled data
(COCO JSON, mask PNGs) their parity and ``evaluate`` stages read."""

from __future__ import annotations

__all__ = ["CLASSES", "average_precision", "scene", "write_dataset"]

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

CLASSES = ("background", "square", "circle", "triangle")
MIN_SHAPE = 20  # px: smaller shapes are not worth detecting at this resolution


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random two-colour gradient: texture the models must learn to ignore."""
    start, end = rng.uniform(40, 215, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    along = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    return start + (end - start) * along[..., None]


def _outline(kind: int, box: tuple[float, float, float, float], rng: np.random.Generator):
    """PIL drawing call arguments for one shape inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if kind == 1:
        return "rectangle", [x0, y0, x1 - 1, y1 - 1]
    if kind == 2:
        return "ellipse", [x0, y0, x1 - 1, y1 - 1]
    radius, cx, cy = (x1 - x0) / 2, (x0 + x1) / 2, (y0 + y1) / 2
    turn = rng.uniform(0, 2 * math.pi)  # triangles point anywhere
    corners = [turn + k * 2 * math.pi / 3 for k in range(3)]
    return "polygon", [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]


def _overlaps_too_much(box, placed) -> bool:
    """Shapes may touch a little, but never hide more than a quarter of either one."""
    for other in placed:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        smaller = min(box[2] - box[0], other[2] - other[0]) ** 2
        if w > 0 and h > 0 and w * h > 0.25 * smaller:
            return True
    return False


def scene(seed: int, size: tuple[int, int] = (160, 160), shapes: tuple[int, int] = (1, 4)):
    """One scene (``size`` is width, height): (RGB image, boxes float32 [N, 4] xyxy of each
    shape's visible pixels, labels int64 [N] in 1..3, mask uint8 [H, W] of class ids).

    1–4 (``shapes``) filled shapes of random colour on a noisy gradient with thin distractor
    lines; later shapes are painted over earlier ones. The same seed gives the same scene.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    background = _background(rng, width, height)
    picture = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(rng.integers(0, 4)):
        ends = rng.uniform(0, 1, size=4) * [width, height, width, height]
        draw.line(list(ends), fill=tuple(rng.integers(0, 256, 3).tolist()), width=1)

    instances = Image.new("L", size, 0)
    ink = ImageDraw.Draw(instances)
    biggest = max(MIN_SHAPE + 1, int(0.4 * min(width, height)))
    placed, kinds = [], []
    for _ in range(rng.integers(shapes[0], shapes[1] + 1)):
        kind = int(rng.integers(1, 4))
        smallest = MIN_SHAPE + 6 if kind == 3 else MIN_SHAPE  # a triangle fills less of its box
        for _attempt in range(30):
            side = int(rng.integers(smallest, biggest + 1))
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if not _overlaps_too_much(box, placed):
                break
        else:
            continue
        local = background[box[1] : box[3], box[0] : box[2]].reshape(-1, 3).mean(0)
        for _attempt in range(20):  # a colour that stands out from the background under it
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - local).sum() > 150:
                break
        method, points = _outline(kind, box, rng)
        getattr(draw, method)(points, fill=tuple(colour.tolist()))
        getattr(ink, method)(points, fill=len(placed) + 1)
        placed.append(box)
        kinds.append(kind)

    noisy = np.asarray(picture, np.float32) + rng.normal(0, rng.uniform(3, 12), (height, width, 3))
    image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    owner = np.asarray(instances)
    mask = np.zeros((height, width), np.uint8)
    boxes, labels = [], []
    for index, kind in enumerate(kinds, start=1):
        ys, xs = np.nonzero(owner == index)
        mask[ys, xs] = kind
        if len(xs) < 0.3 * MIN_SHAPE**2:  # hidden almost entirely: nothing to detect
            continue
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(kind)
    boxes_array = np.asarray(boxes, np.float32).reshape(-1, 4)
    return image, boxes_array, np.asarray(labels, np.int64), mask


def average_precision(found: list[dict], truth: list[tuple], iou: float = 0.5) -> float:
    """VOC-style mAP (all-point interpolation, mean over the classes present) of detections
    ``found`` ({"boxes", "scores", "labels"} per image) against ``(boxes, labels)`` per image."""
    precisions = []
    for label in {int(v) for _, labels in truth for v in labels}:
        hits, total = [], 0
        for detections, (boxes, labels) in zip(found, truth, strict=True):
            wanted = torch.from_numpy(boxes[labels == label])
            total += len(wanted)
            mine = detections["labels"] == label
            scores, order = detections["scores"][mine].sort(descending=True)
            overlaps = box_iou(detections["boxes"][mine][order], wanted)
            taken = torch.zeros(len(wanted), dtype=torch.bool)
            for score, row in zip(scores.tolist(), overlaps, strict=True):
                free = row.masked_fill(taken, -1)  # each shape matches one detection at most
                best = int(free.argmax()) if len(wanted) else -1
                hit = best >= 0 and bool(free[best] >= iou)
                if hit:
                    taken[best] = True
                hits.append((score, hit))
        hits.sort(key=lambda pair: -pair[0])
        correct = np.cumsum([hit for _, hit in hits], dtype=np.float64)
        precision = correct / np.arange(1, len(hits) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision from here on
        precisions.append(float((envelope * [hit for _, hit in hits]).sum() / total))
    return float(np.mean(precisions))


def write_dataset(folder: Path, count: int, seed: int = 10_000, size=(160, 160)) -> Path:
    """``count`` scenes (seeds ``seed``, ``seed + 1``, …) as ``images/NNNN.png``,
    ``masks/NNNN.png`` (mode "L", class ids) and COCO ``instances.json`` (image ids from 1,
    ``file_name`` relative to ``images/``). The same arguments write the same files."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, boxes, labels, mask = scene(seed + index, size)
        name = f"{index:04d}.png"
        image.save(folder / "images" / name)
        Image.fromarray(mask, mode="L").save(folder / "masks" / name)
        images.append({"id": index + 1, "file_name": name, "width": size[0], "height": size[1]})
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO tools read id 0 as "no match"
                    "image_id": index + 1,
                    "category_id": label,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES) if i]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "instances.json").write_text(json.dumps(coco, indent=1))
    return folder
