"""Parity for detection, segmentation and text-recognition (CTC) models: each task's own
metrics of agreement between the reference and the artifact, and its default gates.

A classifier's parity compares logits (``compare``); these tasks compare what users see: the
detections found again (by IoU, with class and score), each pixel's class, the decoded string.
Gates are calibrated on the models the suite trains itself (``pipelines/models``): faithful
artifacts against deliberately broken ones (a raised score threshold in the graph, a mask
shifted by a few pixels, the blank moved to another class), README "Beyond classification".
"""

from __future__ import annotations

__all__ = ["OUTPUT_LABEL", "TASK_DEFAULTS", "TaskComparison", "compare_task", "task_gates"]

from dataclasses import dataclass, field
from typing import Any

from edgepipe.stages.parity.gates import Thresholds

# fp32 exports agree to float rounding; baked preprocessing and fp16 move boxes and pixels at
# edges; INT8 keeps the objects, classes and strings but not every box edge or score.
TASK_DEFAULTS: dict[str, dict[str, Thresholds]] = {
    "detection": {
        "fp32": Thresholds(
            min_recall=0.95,
            min_precision=0.95,
            min_class_agreement=0.99,
            max_score_error=0.02,
            min_mean_iou=0.98,
        ),
        "composed": Thresholds(
            min_recall=0.9,
            min_precision=0.9,
            min_class_agreement=0.95,
            max_score_error=0.1,
            min_mean_iou=0.9,
        ),
        "fp16": Thresholds(
            min_recall=0.9,
            min_precision=0.9,
            min_class_agreement=0.95,
            max_score_error=0.1,
            min_mean_iou=0.9,
        ),
        "int8": Thresholds(
            min_recall=0.8,
            min_precision=0.8,
            min_class_agreement=0.9,
            max_score_error=0.3,
            min_mean_iou=0.8,
        ),
    },
    "segmentation": {
        "fp32": Thresholds(min_pixel_agreement=0.999, min_miou=0.99),
        "composed": Thresholds(min_pixel_agreement=0.97, min_miou=0.93),
        "fp16": Thresholds(min_pixel_agreement=0.99, min_miou=0.97),
        "int8": Thresholds(min_pixel_agreement=0.9, min_miou=0.8),
    },
    "sequence": {
        "fp32": Thresholds(min_string_agreement=1.0, max_cer=0.0),
        "composed": Thresholds(min_string_agreement=0.9, max_cer=0.25),
        "fp16": Thresholds(min_string_agreement=0.95, max_cer=0.25),
        "int8": Thresholds(min_string_agreement=0.85, max_cer=0.34),
    },
}

# gate, metric it reads, direction
_CHECKS = (
    ("min_recall", "recall", min),
    ("min_precision", "precision", min),
    ("min_class_agreement", "class_agreement", min),
    ("max_score_error", "score_max_abs_error", max),
    ("min_mean_iou", "iou_mean", min),
    ("min_pixel_agreement", "pixel_agreement_min", min),
    ("min_miou", "miou", min),
    ("min_string_agreement", "string_agreement", min),
    ("max_cer", "cer_max", max),
)
# the record field that shows which samples break a gate, and whether higher is worse
_CULPRITS = {
    "recall": ("recall", False),
    "class_agreement": ("class_flips", True),
    "score_max_abs_error": ("score_max_abs_error", True),
    "pixel_agreement_min": ("pixel_agreement", False),
    "miou": ("miou", False),
    "string_agreement": ("cer", True),
    "cer_max": ("cer", True),
}
OUTPUT_LABEL = {"detection": "detections", "segmentation": "mask", "sequence": "text"}


def task_gates(task: str, kind: str, overrides: Thresholds) -> dict[str, float | None]:
    """The task's default gates for ``kind`` (the loosest of a combined kind such as
    composed+int8), under the recipe's overrides."""
    tables = [TASK_DEFAULTS[task][part].model_dump() for part in kind.split("+")]
    gates: dict[str, float | None] = {}
    for gate, _metric, direction in _CHECKS:
        values = [t.get(gate) for t in tables]
        if None not in values:
            gates[gate] = min(values) if direction is min else max(values)
    gates.update(overrides.model_dump(exclude_none=True))
    return gates


@dataclass
class TaskComparison:
    """A task's metrics over a group of inputs, and one record per input."""

    task: str
    metrics: dict[str, dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def breaches(self, gates: dict[str, Any]) -> list[str]:
        found = []
        for output, metrics in self.metrics.items():
            for gate, metric, direction in _CHECKS:
                limit, value = gates.get(gate), metrics.get(metric)
                if limit is None or metric not in metrics:
                    continue
                if value is None:
                    # nothing to measure it on: say so instead of passing. Metrics of matched
                    # boxes are undefined whenever recall is 0 or undefined: recall says it once
                    if metric not in _FOLLOWS_RECALL:
                        found.append(f"{output}: {metric} undefined ({_undefined(metric)})")
                elif (direction is min and value < limit) or (direction is max and value > limit):
                    sign = "<" if direction is min else ">"
                    worst = self._culprits(metric, limit, direction)
                    found.append(f"{output}: {metric} {value:.6g} {sign} {limit:g}{worst}")
        return found

    def _culprits(self, metric: str, limit: float, direction) -> str:
        record_field, higher_is_worse = _CULPRITS.get(metric, (None, False))
        if record_field is None:
            return ""
        scored = [s for s in self.samples if s.get(record_field) is not None]
        if record_field == "class_flips":
            bad = [s for s in scored if s[record_field] > 0]
        elif higher_is_worse:
            bad = [
                s
                for s in scored
                if s[record_field] > (0 if metric == "string_agreement" else limit)
            ]
        else:
            bad = [s for s in scored if s[record_field] < limit]
        bad.sort(key=lambda s: s[record_field], reverse=higher_is_worse)
        listed = ", ".join(_describe(s, record_field) for s in bad[:4])
        return f" (on {listed})" if listed else ""


def _describe(sample: dict[str, Any], record_field: str) -> str:
    if "reference_text" in sample:
        return f"{sample['name']} '{sample['reference_text']}' → '{sample['artifact_text']}'"
    value = sample[record_field]
    return (
        f"{sample['name']} {value:.4g}" if isinstance(value, float) else f"{sample['name']} {value}"
    )


_FOLLOWS_RECALL = ("precision", "class_agreement", "score_max_abs_error", "iou_mean")


def _undefined(metric: str) -> str:
    if metric == "recall":
        return (
            "the reference detected nothing at or above the score threshold on these images: "
            "give parity images the model detects in, or lower detection.score_threshold"
        )
    return "no inputs"


def compare_task(
    task: str,
    names: list[str],
    ref_runs: list[list[Any]],
    cand_runs: list[list[Any]],
    reference_meta: dict[str, Any],
    matching: Any,
) -> TaskComparison:
    """``ref_runs``/``cand_runs``: per input, each model's output arrays."""
    if task == "detection":
        metrics, records = _detection(names, ref_runs, cand_runs, matching)
    elif task == "segmentation":
        from edgepipe.tasks.segmentation import segmentation_parity

        metrics, records = segmentation_parity(
            names, [r[0] for r in ref_runs], [c[0] for c in cand_runs]
        )
    else:
        from edgepipe.tasks.sequence import sequence_parity

        ctc = reference_meta["ctc"]
        try:
            metrics, records = sequence_parity(
                names,
                [r[0] for r in ref_runs],
                [c[0] for c in cand_runs],
                ctc["alphabet"],
                ctc["blank"],
                ctc["layout"],
            )
        except ValueError as exc:  # the class count does not fit the alphabet: say which
            from edgepipe.errors import StageError

            raise StageError(
                f"cannot decode the outputs with the load stage's ctc: {exc}"
            ) from None
    return TaskComparison(task, {OUTPUT_LABEL[task]: metrics}, records)


def _detection(names, ref_runs, cand_runs, matching) -> tuple[dict, list]:
    from edgepipe.errors import StageError
    from edgepipe.tasks.detection import detection_parity

    for side, runs in (("reference", ref_runs), ("artifact", cand_runs)):
        if runs and len(runs[0]) != 3:
            raise StageError(
                f"the {side} gives {len(runs[0])} outputs; a detector's are boxes, scores and "
                "labels (a torchvision detector, or a model with those three outputs)"
            )
    return detection_parity(
        names, ref_runs, cand_runs, matching.score_threshold, matching.iou_threshold
    )
