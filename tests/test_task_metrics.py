"""Detection, segmentation and CTC text metrics: identical outputs score perfectly, and each
realistic corruption moves the metric that should catch it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepipe.tasks.detection import box_iou, coco_evaluate, detection_parity
from edgepipe.tasks.segmentation import mask_miou, segmentation_parity
from edgepipe.tasks.sequence import (
    cer,
    class_characters,
    ctc_greedy_decode,
    levenshtein,
    sequence_parity,
    text_accuracy,
)

# ---------------------------------------------------------------- detection

BOXES = np.array(
    [[10, 10, 50, 50], [60, 20, 120, 80], [5, 90, 45, 140], [130, 130, 190, 170]], np.float32
)
SCORES = np.array([0.95, 0.8, 0.6, 0.4], np.float32)
LABELS = np.array([1, 2, 3, 1], np.float32)  # float, as many exported graphs give them


def detections(boxes=BOXES, scores=SCORES, labels=LABELS):
    return [boxes.copy(), scores.copy(), labels.copy()]


def test_box_iou_known_values():
    ious = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert ious.shape == (1, 3)
    assert ious[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    assert box_iou(np.zeros((0, 4)), BOXES).shape == (0, 4)


def test_identical_detections_are_perfect():
    metrics, records = detection_parity(["a", "b"], [detections()] * 2, [detections()] * 2)
    assert metrics["reference_detections"] == metrics["artifact_detections"] == 8
    assert metrics["matched"] == 8
    assert metrics["recall"] == metrics["precision"] == metrics["class_agreement"] == 1.0
    assert metrics["score_max_abs_error"] == 0.0
    assert metrics["iou_min"] == metrics["iou_mean"] == 1.0
    assert records[0] == {
        "name": "a",
        "reference_detections": 4,
        "matched": 4,
        "recall": 1.0,
        "class_flips": 0,
        "score_max_abs_error": 0.0,
        "iou_min": 1.0,
    }
    json.dumps([metrics, records])  # plain Python values only


def test_dropped_box_lowers_recall_not_precision():
    dropped = [BOXES[:3], SCORES[:3], LABELS[:3]]
    metrics, records = detection_parity(["a"], [detections()], [dropped])
    assert metrics["recall"] == 0.75
    assert metrics["precision"] == 1.0
    assert records[0]["matched"] == 3


def test_extra_box_lowers_precision():
    extra = [np.vstack([BOXES, [[200, 0, 240, 40]]]), np.append(SCORES, 0.9), np.append(LABELS, 2)]
    metrics, _ = detection_parity(["a"], [detections()], [extra])
    assert metrics["recall"] == 1.0
    assert metrics["precision"] == 0.8


def test_changed_labels_lower_class_agreement():
    flipped = detections(labels=np.array([1, 5, 5, 1], np.float32))
    metrics, records = detection_parity(["a"], [detections()], [flipped])
    assert metrics["recall"] == 1.0  # matching is class-agnostic
    assert metrics["class_agreement"] == 0.5
    assert records[0]["class_flips"] == 2


def test_box_shifted_by_half_its_width():
    shifted = BOXES.copy()
    shifted[0, [0, 2]] += 20  # 40 px wide box moved 20 px: IoU 1/3, under 0.5
    metrics, records = detection_parity(["a"], [detections()], [detections(boxes=shifted)])
    assert metrics["recall"] == 0.75
    assert records[0]["iou_min"] == 1.0
    loose, _ = detection_parity(["a"], [detections()], [detections(boxes=shifted)], 0.3, 0.3)
    assert loose["recall"] == 1.0
    assert loose["iou_min"] == pytest.approx(1 / 3)
    assert loose["iou_mean"] < 1.0


def test_scaled_scores_raise_score_error_within_slack():
    scaled = detections(scores=SCORES * 0.7)  # 0.4 -> 0.28: under 0.3, over the 0.15 slack
    metrics, _ = detection_parity(["a"], [detections()], [scaled])
    assert metrics["recall"] == 1.0
    assert metrics["artifact_detections"] == 3
    assert metrics["score_max_abs_error"] == pytest.approx(0.95 * 0.3, abs=1e-6)


def test_greedy_matching_serves_the_highest_score_first():
    # two reference boxes overlap one artifact box; the stronger reference detection gets it
    ref = [np.array([[0, 0, 10, 10], [1, 0, 11, 10]]), np.array([0.5, 0.9]), np.array([1, 2])]
    cand = [np.array([[0, 0, 10, 10]]), np.array([0.9]), np.array([2])]
    metrics, _ = detection_parity(["a"], [ref], [cand])
    assert metrics["matched"] == 1
    assert metrics["class_agreement"] == 1.0
    assert metrics["iou_min"] == pytest.approx(90 / 110)


def test_no_detections_leaves_ratios_undefined():
    empty = [np.zeros((0, 4)), np.zeros(0), np.zeros(0)]
    metrics, records = detection_parity(["a"], [empty], [empty])
    assert metrics["recall"] is metrics["precision"] is metrics["class_agreement"] is None
    assert metrics["iou_mean"] is None and records[0]["recall"] is None


def write_coco(path):
    """Two images, three boxes of two categories; ``area`` and ``iscrowd`` left out on purpose."""
    boxes = {1: [[10, 10, 40, 40], [60, 20, 60, 60]], 2: [[5, 5, 50, 30]]}
    annotations = [
        {"image_id": image_id, "bbox": box, "category_id": 1 if box[0] < 50 else 2}
        for image_id, xywh_boxes in boxes.items()
        for box in xywh_boxes
    ]
    for number, annotation in enumerate(annotations, start=1):
        annotation["id"] = number
    images = [{"id": i, "file_name": f"img{i}.jpg", "width": 200, "height": 200} for i in (1, 2)]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    document = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(document))
    return {f"img{i}.jpg": [[x, y, x + w, y + h] for x, y, w, h in b] for i, b in boxes.items()}


def test_coco_evaluate(tmp_path, capsys):
    pytest.importorskip("pycocotools")
    annotations = tmp_path / "instances.json"
    truth = write_coco(annotations)

    def predictions(keep_first_only=False):
        result = {}
        for name, boxes in truth.items():
            boxes = boxes[:1] if keep_first_only else boxes
            labels = [1 if box[0] < 50 else 2 for box in boxes]
            result[name] = [np.array(boxes, float), np.full(len(boxes), 0.9), np.array(labels)]
        return result

    perfect = coco_evaluate(predictions(), annotations)
    assert perfect == {"map": 1.0, "map50": 1.0, "map75": 1.0, "images": 2, "detections": 3}
    half = coco_evaluate(predictions(keep_first_only=True), annotations)
    assert half["detections"] == 2
    assert half["map"] < 1.0
    assert capsys.readouterr().out == ""  # pycocotools' printing is silenced

    with pytest.raises(ValueError, match="missing.jpg"):
        coco_evaluate({"missing.jpg": predictions()["img1.jpg"]}, annotations)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations, categories"):
        coco_evaluate({}, broken)


# ---------------------------------------------------------------- segmentation


def blob_logits(shift=0, classes=4, size=32):
    """[1, C, H, W] logits whose argmax is a background with two square objects."""
    mask = np.zeros((size, size), np.int64)
    mask[4:16, 4 + shift : 16 + shift] = 1
    mask[18:30, 14 + shift : 28 + shift] = 2
    logits = np.random.default_rng(0).normal(0, 0.1, (1, classes, size, size)).astype(np.float32)
    logits[0] += 5 * np.eye(classes, dtype=np.float32)[mask].transpose(2, 0, 1)
    return logits


def test_identical_masks_are_perfect():
    metrics, records = segmentation_parity(["a"], [blob_logits()], [blob_logits()])
    assert metrics == {
        "samples": 1,
        "pixel_agreement_min": 1.0,
        "pixel_agreement_mean": 1.0,
        "miou": 1.0,
        "miou_min": 1.0,
    }
    assert records == [{"name": "a", "pixel_agreement": 1.0, "miou": 1.0, "classes": 3}]


def test_shifted_mask_lowers_agreement_and_miou():
    names, refs = ["a", "b"], [blob_logits(), blob_logits()[0]]
    cands = [blob_logits(shift=4), blob_logits()[0]]  # [C, H, W] works as well
    metrics, records = segmentation_parity(names, refs, cands)
    assert records[0]["pixel_agreement"] < 0.95 and records[1]["pixel_agreement"] == 1.0
    assert metrics["pixel_agreement_min"] == records[0]["pixel_agreement"]
    assert records[0]["miou"] < 0.8
    assert metrics["miou_min"] == records[0]["miou"] < metrics["miou"] < 1.0


def test_segmentation_shape_mismatch():
    with pytest.raises(ValueError, match=r"output shapes differ: reference \[1, 4, 32, 32\]"):
        segmentation_parity(["a"], [blob_logits()], [blob_logits(classes=5)])


def test_mask_miou():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    result = mask_miou([truth.clip(0, 1)], [truth], num_classes=3)
    assert result == {
        "images": 1,
        "miou": 1.0,
        "pixel_accuracy": 1.0,
        "per_class_iou": [1.0, 1.0, None],
    }
    wrong = np.array([[0, 1, 1, 1], [0, 0, 1, 0]])  # one 0 predicted as 1; ignored pixel free
    result = mask_miou([wrong], [truth], num_classes=3)
    assert result["pixel_accuracy"] == pytest.approx(6 / 7)
    assert result["per_class_iou"][:2] == pytest.approx([3 / 4, 3 / 4])
    with pytest.raises(ValueError, match="predicted classes span 1..2, outside 0..1"):
        mask_miou([wrong + 1], [truth.clip(0, 1)], num_classes=2)


# ---------------------------------------------------------------- CTC text

DIGITS = "0123456789"


def one_hot_path(path, classes=11):
    """[1, T, C] logits whose best path is ``path`` (class indices)."""
    return (np.eye(classes, dtype=np.float32)[path] * 10)[None]


def test_class_characters():
    assert class_characters("abc", 0, 4) == [None, "a", "b", "c"]
    assert class_characters("abc", 3, 4) == ["a", "b", "c", None]
    with pytest.raises(ValueError, match=r"outputs 12 classes; alphabet '0123456789' \(10\)"):
        class_characters(DIGITS, 0, 12)
    with pytest.raises(ValueError, match="blank index 11 is out of range"):
        class_characters(DIGITS, 11, 11)


def test_greedy_decode_collapses_repeats_unless_separated_by_blank():
    # "1 1 _ 1 2 _ 3 3" with blank 0 and digit d at class d + 1
    separated = one_hot_path([2, 2, 0, 2, 3, 0, 4, 4])
    assert ctc_greedy_decode(separated, DIGITS) == ["1123"]
    collapsed = one_hot_path([2, 2, 2, 3, 4, 4])
    assert ctc_greedy_decode(collapsed, DIGITS) == ["123"]
    both = np.concatenate([separated, one_hot_path([0, 2, 2, 3, 4, 4, 0, 0])])
    assert ctc_greedy_decode(both, DIGITS) == ["1123", "123"]
    assert ctc_greedy_decode(both.transpose(1, 0, 2), DIGITS, layout="TNC") == ["1123", "123"]
    blank_last = one_hot_path([1, 10, 1, 2])  # blank 10: digit d at class d
    assert ctc_greedy_decode(blank_last, DIGITS, blank=10) == ["112"]


def test_levenshtein_and_cer():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("same", "same") == 0
    assert cer("1123", "123") == 0.25
    assert cer("", "ab") == 2.0


def test_sequence_parity():
    logits = [one_hot_path([2, 2, 0, 2, 3, 0, 4, 4]), one_hot_path([5, 0, 6, 6, 7, 0, 8, 8])]
    metrics, records = sequence_parity(["a", "b"], logits, logits, DIGITS)
    assert metrics == {"samples": 2, "string_agreement": 1.0, "cer_mean": 0.0, "cer_max": 0.0}
    assert records[1] == {"name": "b", "reference_text": "4567", "artifact_text": "4567", "cer": 0}

    # an artifact whose classes moved the blank to the end: read with blank 0, every digit
    # reads one lower and every blank reads "9"
    moved = [np.roll(output, -1, axis=2) for output in logits]
    metrics, records = sequence_parity(["a", "b"], logits, moved, DIGITS)
    assert metrics["string_agreement"] == 0.0
    assert metrics["cer_mean"] > 0 and metrics["cer_max"] >= metrics["cer_mean"]
    assert records[1]["artifact_text"] == "394596"


def test_text_accuracy():
    assert text_accuracy(["123", "45"], ["123", "456"]) == {
        "samples": 2,
        "accuracy": 0.5,
        "cer": pytest.approx(1 / 6),
    }
    assert text_accuracy([], [])["accuracy"] is None
