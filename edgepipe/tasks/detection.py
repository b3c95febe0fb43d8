"""Object detection: how closely a converted artifact's detections follow its reference model's,
and COCO mAP against ground truth.

A detection result for one image is ``[boxes, scores, labels]``: boxes ``[N, 4]`` xyxy pixels,
scores ``[N]``, labels ``[N]`` (integers, possibly stored as floats).

Parity matches detections greedily rather than by index because a conversion may reorder
detections with equal scores, and a score that drifts across the threshold must show up as a
score error rather than as a missing box: detections on the query side need ``score_threshold``,
those they may match need only half of it.
"""

from __future__ import annotations

__all__ = ["box_iou", "coco_evaluate", "detection_parity"]

from pathlib import Path
from typing import Any


def box_iou(a: Any, b: Any) -> Any:
    """Intersection over union of every box in ``a`` with every box in ``b`` (xyxy):
    ``[len(a), len(b)]``. Boxes of zero area have IoU 0 with everything."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0.0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0.0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1e-300), 0.0)


def _detections(run: Any) -> tuple[Any, Any, Any]:
    """``[boxes, scores, labels]`` as float64 ``[N, 4]``, float64 ``[N]``, int64 ``[N]``."""
    import numpy as np

    if len(run) != 3:
        raise ValueError(f"a detection result is [boxes, scores, labels], got {len(run)} items")
    boxes = np.asarray(run[0], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(run[1], dtype=np.float64).reshape(-1)
    labels = np.rint(np.asarray(run[2], dtype=np.float64)).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"boxes, scores and labels differ in length: {len(boxes)}, {len(scores)}, {len(labels)}"
        )
    return boxes, scores, labels


def _greedy_match(
    query: tuple[Any, Any, Any],
    pool: tuple[Any, Any, Any],
    score_threshold: float,
    iou_threshold: float,
) -> tuple[int, list[tuple[int, int, float]]]:
    """Match ``query``'s detections scoring ``score_threshold`` or more, highest score first,
    each to the unmatched ``pool`` detection (score at least half the threshold) it overlaps
    most, with IoU at least ``iou_threshold``; labels are ignored. Returns the number of query
    detections and the ``(query index, pool index, IoU)`` pairs."""
    import numpy as np

    query_boxes, query_scores, _ = query
    pool_boxes, pool_scores, _ = pool
    queries = np.flatnonzero(query_scores >= score_threshold)
    queries = queries[np.argsort(-query_scores[queries], kind="stable")]
    candidates = np.flatnonzero(pool_scores >= score_threshold / 2)
    ious = box_iou(query_boxes[queries], pool_boxes[candidates])
    taken = np.zeros(len(candidates), dtype=bool)
    pairs = []
    for row, query_index in enumerate(queries):
        available = np.where(taken | (ious[row] < iou_threshold), -1.0, ious[row])
        if len(available) == 0 or available.max() < 0:
            continue
        best = int(available.argmax())
        taken[best] = True
        pairs.append((int(query_index), int(candidates[best]), float(ious[row, best])))
    return len(queries), pairs


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / denominator if denominator else None


def detection_parity(
    names: list[str],
    ref_runs: list[Any],
    cand_runs: list[Any],
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The artifact's detections (``cand_runs``) against the reference's (``ref_runs``), one
    ``[boxes, scores, labels]`` per image: aggregate metrics and one record per image.

    ``matched``, class agreement, score error and IoU describe the reference-side matching
    (recall); precision repeats the matching with the roles swapped."""
    if not len(names) == len(ref_runs) == len(cand_runs):
        raise ValueError(
            f"names, reference and artifact results differ in number: {len(names)}, "
            f"{len(ref_runs)}, {len(cand_runs)}"
        )
    totals = {"reference": 0, "artifact": 0, "matched": 0, "artifact_matched": 0, "same": 0}
    score_errors: list[float] = []
    ious: list[float] = []
    records = []
    for name, ref_run, cand_run in zip(names, ref_runs, cand_runs, strict=True):
        ref, cand = _detections(ref_run), _detections(cand_run)
        wanted, pairs = _greedy_match(ref, cand, score_threshold, iou_threshold)
        offered, reverse_pairs = _greedy_match(cand, ref, score_threshold, iou_threshold)
        errors = [abs(float(ref[1][r] - cand[1][c])) for r, c, _ in pairs]
        flips = sum(int(ref[2][r] != cand[2][c]) for r, c, _ in pairs)
        pair_ious = [iou for _, _, iou in pairs]
        totals["reference"] += wanted
        totals["artifact"] += offered
        totals["matched"] += len(pairs)
        totals["artifact_matched"] += len(reverse_pairs)
        totals["same"] += len(pairs) - flips
        score_errors += errors
        ious += pair_ious
        records.append(
            {
                "name": name,
                "reference_detections": wanted,
                "matched": len(pairs),
                "recall": _ratio(len(pairs), wanted),
                "class_flips": flips,
                "score_max_abs_error": max(errors) if errors else None,
                "iou_min": min(pair_ious) if pair_ious else None,
            }
        )
    metrics = {
        "samples": len(names),
        "reference_detections": totals["reference"],
        "artifact_detections": totals["artifact"],
        "matched": totals["matched"],
        "recall": _ratio(totals["matched"], totals["reference"]),
        "precision": _ratio(totals["artifact_matched"], totals["artifact"]),
        "class_agreement": _ratio(totals["same"], totals["matched"]),
        "score_max_abs_error": max(score_errors) if score_errors else None,
        "iou_min": min(ious) if ious else None,
        "iou_mean": sum(ious) / len(ious) if ious else None,
    }
    return metrics, records


def _coco_ground_truth(annotations_path: str | Path) -> Any:
    """The annotation file as a pycocotools ``COCO``, with the ``area`` and ``iscrowd`` that
    COCOeval needs filled in where a hand-written file leaves them out."""
    import json

    from pycocotools.coco import COCO

    path = Path(annotations_path)
    dataset = json.loads(path.read_text())
    required = ("images", "annotations", "categories")
    missing = [key for key in required if not isinstance(dataset, dict) or key not in dataset]
    if missing:
        raise ValueError(f"{path} is not a COCO annotation file: no {', '.join(missing)}")
    for annotation in dataset["annotations"]:
        width, height = annotation["bbox"][2:4]
        annotation.setdefault("area", float(width * height))
        annotation.setdefault("iscrowd", 0)
    ground_truth = COCO()
    ground_truth.dataset = dataset
    ground_truth.createIndex()
    return ground_truth


def coco_evaluate(predictions: dict[str, Any], annotations_path: str | Path) -> dict[str, Any]:
    """COCO box mAP of ``predictions`` (image file name -> ``[boxes, scores, labels]``, labels
    being category ids) against the annotation file, over the predicted images only — an image
    where the model found nothing must be given with empty arrays. ``None`` where COCOeval has
    nothing to measure (no ground truth)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    # pycocotools prints progress and the summary table: keep the caller's stdout clean
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = _coco_ground_truth(annotations_path)
        image_ids = {image["file_name"]: image["id"] for image in ground_truth.dataset["images"]}
        results = []
        for file_name, run in predictions.items():
            if file_name not in image_ids:
                raise ValueError(f"{file_name!r} is not among the images of {annotations_path}")
            boxes, scores, labels = _detections(run)
            image_id = image_ids[file_name]
            rows = zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
            for (x0, y0, x1, y1), score, label in rows:
                bbox = [x0, y0, x1 - x0, y1 - y0]  # COCO boxes are xywh
                results.append(
                    {"image_id": image_id, "category_id": label, "bbox": bbox, "score": score}
                )
        summary = {"images": len(predictions), "detections": len(results)}
        if not results:
            # loadRes cannot take an empty list; no detections means no true positives
            # (getAnnIds of no images means every annotation: no images, nothing to measure)
            truth = predictions and ground_truth.getAnnIds([image_ids[n] for n in predictions])
            score = 0.0 if truth else None
            return {"map": score, "map50": score, "map75": score, **summary}
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.params.imgIds = sorted(image_ids[name] for name in predictions)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [float(value) if value >= 0 else None for value in evaluation.stats[:3]]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], **summary}
