"""Semantic segmentation: how closely a converted artifact's masks follow its reference model's,
and mIoU against ground-truth masks.

Outputs are logits ``[N, C, H, W]`` (or ``[C, H, W]``); a pixel's class is the argmax over
``C``. Both metrics come from a confusion matrix, so IoU is pooled over pixels (a class that is
tiny in one image is not weighted like one that fills another).
"""

from __future__ import annotations

__all__ = ["mask_miou", "segmentation_parity"]

from typing import Any


def _confusion(rows: Any, columns: Any, num_classes: int) -> Any:
    """``[num_classes, num_classes]`` pixel counts: row = ``rows``' class, column =
    ``columns``' class."""
    import numpy as np

    flat = rows.reshape(-1).astype(np.int64) * num_classes + columns.reshape(-1)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _class_ious(confusion: Any) -> Any:
    """IoU per class from a confusion matrix; NaN for a class that appears on neither side."""
    import numpy as np

    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def _mean_iou(confusion: Any) -> float | None:
    import numpy as np

    ious = _class_ious(confusion)
    present = ~np.isnan(ious)
    return float(ious[present].mean()) if present.any() else None


def segmentation_parity(
    names: list[str], ref_logits: list[Any], cand_logits: list[Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The artifact's masks against the reference's, one logits array per image: aggregate
    metrics and one record per image. ``miou`` pools every image's pixels; ``miou_min`` is the
    worst image's own mIoU."""
    import numpy as np

    if not len(names) == len(ref_logits) == len(cand_logits):
        raise ValueError(
            f"names, reference and artifact outputs differ in number: {len(names)}, "
            f"{len(ref_logits)}, {len(cand_logits)}"
        )
    records = []
    pooled = None
    for name, ref_output, cand_output in zip(names, ref_logits, cand_logits, strict=True):
        ref, cand = np.asarray(ref_output), np.asarray(cand_output)
        if ref.shape != cand.shape:
            raise ValueError(
                f"output shapes differ: reference {list(ref.shape)}, artifact {list(cand.shape)}"
            )
        if ref.ndim not in (3, 4):
            raise ValueError(
                f"segmentation logits are [N, C, H, W] or [C, H, W], got {list(ref.shape)}"
            )
        num_classes = ref.shape[-3]
        ref_mask, cand_mask = ref.argmax(axis=-3), cand.argmax(axis=-3)
        confusion = _confusion(ref_mask, cand_mask, num_classes)
        if pooled is None:
            pooled = confusion
        elif pooled.shape != confusion.shape:
            raise ValueError(f"images differ in class count: {len(pooled)} and {num_classes}")
        else:
            pooled = pooled + confusion
        records.append(
            {
                "name": name,
                "pixel_agreement": float((ref_mask == cand_mask).mean()),
                "miou": _mean_iou(confusion),
                "classes": int(len(np.unique(ref_mask))),
            }
        )
    agreements = [record["pixel_agreement"] for record in records]
    image_mious = [record["miou"] for record in records if record["miou"] is not None]
    metrics = {
        "samples": len(records),
        "pixel_agreement_min": min(agreements) if agreements else None,
        "pixel_agreement_mean": sum(agreements) / len(agreements) if agreements else None,
        "miou": _mean_iou(pooled) if pooled is not None else None,
        "miou_min": min(image_mious) if image_mious else None,
    }
    return metrics, records


def mask_miou(
    predicted: list[Any], truth: list[Any], num_classes: int, ignore_index: int = 255
) -> dict[str, Any]:
    """Predicted ``[H, W]`` class masks against ground truth: mIoU over the classes that appear
    in either, pixel accuracy, IoU per class (``None`` for a class in neither). Ground-truth
    pixels equal to ``ignore_index`` (object borders in VOC) are left out."""
    import numpy as np

    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted masks for {len(truth)} ground-truth masks")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (predicted_mask, truth_mask) in enumerate(zip(predicted, truth, strict=True)):
        predicted_mask, truth_mask = np.asarray(predicted_mask), np.asarray(truth_mask)
        if predicted_mask.shape != truth_mask.shape:
            raise ValueError(
                f"mask {index}: predicted {list(predicted_mask.shape)} but ground truth "
                f"{list(truth_mask.shape)}"
            )
        valid = truth_mask != ignore_index
        predicted_classes = predicted_mask[valid].astype(np.int64)
        truth_classes = truth_mask[valid].astype(np.int64)
        for side, classes in (("predicted", predicted_classes), ("ground-truth", truth_classes)):
            if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
                raise ValueError(
                    f"mask {index}: {side} classes span {classes.min()}..{classes.max()}, "
                    f"outside 0..{num_classes - 1}"
                )
        confusion += _confusion(truth_classes, predicted_classes, num_classes)
    ious = _class_ious(confusion)
    total = int(confusion.sum())
    return {
        "images": len(truth),
        "miou": _mean_iou(confusion),
        "pixel_accuracy": float(np.trace(confusion)) / total if total else None,
        "per_class_iou": [None if np.isnan(iou) else float(iou) for iou in ious],
    }
