"""``evaluate`` for detection, segmentation and text recognition: the task's standard metric of
the artifact and of its torch model on labelled data in the task's usual format.

- detection: a folder of images and a COCO annotation file (``annotations:``): COCO box mAP
  (pycocotools); labels are the category ids, as torchvision's COCO detectors give them;
- segmentation: ``images/`` and ``masks/`` (one PNG of class ids per image, same stem; 255 is
  ignored, as in VOC): mIoU, the prediction resized to the mask's size (nearest);
- sequence: images and ``labels.txt`` (``<file name><TAB><text>`` per line): exact-match
  accuracy and CER of the greedy CTC decoding.
"""

from __future__ import annotations

__all__ = ["PRIMARY_METRIC", "evaluate_task"]

from pathlib import Path
from typing import Any

from edgepipe.errors import StageError
from edgepipe.imaging.samples import find_images, open_images
from edgepipe.runtimes.torch_eager import run_on_image

PRIMARY_METRIC = {"detection": "map", "segmentation": "miou", "sequence": "accuracy"}
"""The metric whose drop the evaluate gate bounds, per task."""


def evaluate_task(
    task: str,
    reference,
    candidate,
    dataset: Path,
    annotations: Path | None,
    limit: int | None,
) -> dict[str, Any]:
    """``{"torch": metrics, "artifact": metrics, "images": n, "metric": name}``."""
    if task == "detection":
        return _detection(reference, candidate, dataset, annotations, limit)
    if task == "segmentation":
        return _segmentation(reference, candidate, dataset, limit)
    return _sequence(reference, candidate, dataset, limit)


def _outputs(reference, candidate, paths: list[Path]):
    """Per image: (file name, torch outputs, artifact outputs)."""
    for name, image in open_images(paths):
        ref, cand = run_on_image(reference, candidate, image)
        yield name, ref, cand


def _detection(reference, candidate, dataset: Path, annotations: Path | None, limit: int | None):
    import json

    from edgepipe.tasks.detection import coco_evaluate

    if annotations is None:
        raise StageError(
            "evaluating a detector needs `annotations:`, a COCO annotation file for the images"
        )
    try:
        listed = [image["file_name"] for image in json.loads(annotations.read_text())["images"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise StageError(f"{annotations} is not a COCO annotation file: {exc}") from None
    listed = listed[:limit] if limit else listed
    missing = [name for name in listed if not (dataset / name).is_file()]
    if missing:
        raise StageError(f"{len(missing)} annotated images are not under {dataset}: {missing[:3]}")
    found: dict[str, dict[str, Any]] = {"torch": {}, "artifact": {}}
    for name, ref, cand in _outputs(reference, candidate, [dataset / n for n in listed]):
        found["torch"][name], found["artifact"][name] = ref, cand
    try:
        result = {side: coco_evaluate(runs, annotations) for side, runs in found.items()}
    except ValueError as exc:
        raise StageError(str(exc)) from None
    return {**result, "images": len(listed), "metric": "map"}


def _segmentation(reference, candidate, dataset: Path, limit: int | None):
    import numpy as np
    from PIL import Image

    from edgepipe.tasks.segmentation import mask_miou

    paths = find_images(dataset / "images")[:limit] if limit else find_images(dataset / "images")
    if not paths:
        raise StageError(f"no images under {dataset / 'images'} (expected images/ and masks/)")
    truth, predicted = [], {"torch": [], "artifact": []}
    classes = 0
    for path, (_name, ref, cand) in zip(paths, _outputs(reference, candidate, paths), strict=True):
        mask_path = dataset / "masks" / f"{path.stem}.png"
        if not mask_path.is_file():
            raise StageError(f"no mask for {path.name}: expected {mask_path}")
        with Image.open(mask_path) as mask:
            truth.append(np.asarray(mask))
        classes = ref[0].shape[1]
        for side, logits in (("torch", ref[0]), ("artifact", cand[0])):
            classes_map = Image.fromarray(logits[0].argmax(0).astype(np.uint8))
            size = (truth[-1].shape[1], truth[-1].shape[0])
            predicted[side].append(np.asarray(classes_map.resize(size, Image.Resampling.NEAREST)))
    try:
        result = {side: mask_miou(masks, truth, classes) for side, masks in predicted.items()}
    except ValueError as exc:
        raise StageError(f"{dataset}: {exc}") from None
    return {**result, "images": len(paths), "metric": "miou"}


def _sequence(reference, candidate, dataset: Path, limit: int | None):
    from edgepipe.tasks.sequence import ctc_greedy_decode, text_accuracy

    labels_file = dataset / "labels.txt"
    if not labels_file.is_file():
        raise StageError(f"no {labels_file}: expected one '<file name><TAB><text>' per line")
    labels = {}
    for number, line in enumerate(labels_file.read_text().splitlines(), 1):
        if line.strip():
            name, tab, text = line.partition("\t")
            if not tab:
                raise StageError(f"{labels_file}:{number}: expected '<file name><TAB><text>'")
            labels[name] = text
    names = sorted(labels)[:limit] if limit else sorted(labels)
    missing = [name for name in names if not (dataset / name).is_file()]
    if missing:
        raise StageError(f"{len(missing)} labelled images are not under {dataset}: {missing[:3]}")
    ctc = reference.artifact.meta["ctc"]
    texts: dict[str, list[str]] = {"torch": [], "artifact": []}
    for _name, ref, cand in _outputs(reference, candidate, [dataset / n for n in names]):
        for side, logits in (("torch", ref[0]), ("artifact", cand[0])):
            texts[side] += ctc_greedy_decode(logits, ctc["alphabet"], ctc["blank"], ctc["layout"])
    wanted = [labels[name] for name in names]
    result = {side: text_accuracy(found, wanted) for side, found in texts.items()}
    return {**result, "images": len(names), "metric": "accuracy"}
