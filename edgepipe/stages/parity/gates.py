"""Parity gates: default thresholds per artifact kind, and checking metrics against them."""

from __future__ import annotations

__all__ = [
    "GATED_INPUTS",
    "RANDOM_WEIGHT_DEFAULTS",
    "TRAINED_DEFAULTS",
    "Thresholds",
    "breaches",
    "gates_for",
    "worst_cosine",
]

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from edgepipe.stages.parity.metrics import DECIDED_MARGIN


class Thresholds(BaseModel):
    """Gates; unset ones take the default for the artifact's kind (see `edgepipe stages parity`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cosine: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description=(
            "Lowest allowed cosine similarity of mean-centred outputs, over every sample."
        ),
    )
    max_abs_error: float | None = Field(
        default=None, ge=0, description=("Largest allowed absolute difference of any output value.")
    )
    max_mean_rel_error: float | None = Field(
        default=None, ge=0, description=("Largest allowed mean |difference| / mean |reference|.")
    )
    min_top1_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Lowest allowed fraction of samples with the same arg-max (trained weights only)."
        ),
    )
    min_top5_overlap: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=("Lowest allowed mean overlap of the top-5 classes (trained weights only)."),
    )
    max_kl: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest allowed KL divergence (nats) of the artifact's class distribution from the "
            "reference's, on any sample."
        ),
    )
    decided_margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "A sample counts against the top-1/top-5 gates only where the reference is decided: "
            f"its top probability beats the second by at least this (default {DECIDED_MARGIN}). "
            "Flips on undecided samples are listed, not failed."
        ),
    )
    # detection, segmentation and sequence (CTC) models: see edgepipe/stages/parity/tasks.py
    min_recall: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detection: lowest allowed fraction of the reference's detections (at or "
        "above the score threshold) that the artifact finds again.",
    )
    min_precision: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detection: lowest allowed fraction of the artifact's detections that the "
        "reference made too.",
    )
    min_class_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detection: lowest allowed fraction of matched boxes with the same class.",
    )
    max_score_error: float | None = Field(
        default=None, ge=0, le=1, description="Detection: largest allowed score difference."
    )
    min_mean_iou: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detection: lowest allowed mean IoU of matched boxes.",
    )
    min_pixel_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Segmentation: lowest allowed fraction of pixels with the same class, "
        "on any image.",
    )
    min_miou: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Segmentation: lowest allowed mIoU of the artifact's masks against the "
        "reference's.",
    )
    min_string_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Sequence: lowest allowed fraction of inputs decoded to the same string.",
    )
    max_cer: float | None = Field(
        default=None,
        ge=0,
        description="Sequence: largest allowed character error rate of the artifact's string "
        "against the reference's, on any input.",
    )

    @model_serializer(mode="wrap")
    def _task_gates_when_set(self, handler):
        # gates added for the task metrics leave the dump (and so every existing parity key)
        # unless a recipe sets them
        dumped = handler(self)
        return {k: v for k, v in dumped.items() if v is not None or k not in TASK_GATES}


# Random weights give flat logits: class gates mean nothing there, and the centred cosine is
# what catches a wrong artifact (MEASUREMENTS #9). Calibrated on the timm families of
# tests/test_families.py: fp32 exports agree to ~1e-6; correct compositions measured >= 0.99997
# on eight families, ImageNet mean/std forced on CLIP-normalised eva02 0.9979: the composed
# gate sits between the two.
RANDOM_WEIGHT_DEFAULTS: dict[str, Thresholds] = {
    "fp32": Thresholds(min_cosine=0.9999, max_mean_rel_error=1e-3),
    "composed": Thresholds(min_cosine=0.9995, max_mean_rel_error=0.02),
    "fp16": Thresholds(min_cosine=0.999, max_mean_rel_error=0.02),
    "int8": Thresholds(min_cosine=0.98, max_mean_rel_error=0.2),
}
# Trained weights: a trained network turns the same input perturbation into a larger logit
# change than a random one, so the centred cosine is looser, and what gates is what users see:
# the class on decided samples, and the class distribution (KL). Measured on ImageNet
# EfficientNet-Lite0 (README, "Verification gates"): faithful artifacts vs broken ones (wrong
# mean/std, BGR, a zeroed layer, INT8 calibrated on noise).
TRAINED_DEFAULTS: dict[str, Thresholds] = {
    "fp32": Thresholds(
        min_cosine=0.9999,
        max_mean_rel_error=1e-3,
        max_kl=1e-4,
        min_top1_agreement=0.99,
        min_top5_overlap=0.95,
    ),
    "composed": Thresholds(
        min_cosine=0.999,
        max_mean_rel_error=0.02,
        max_kl=0.005,
        min_top1_agreement=0.95,
        min_top5_overlap=0.9,
    ),
    "fp16": Thresholds(
        min_cosine=0.999,
        max_mean_rel_error=0.02,
        max_kl=0.005,
        min_top1_agreement=0.95,
        min_top5_overlap=0.9,
    ),
    "int8": Thresholds(
        min_cosine=0.9,
        max_mean_rel_error=0.4,
        max_kl=0.25,
        min_top1_agreement=0.85,
        min_top5_overlap=0.8,
    ),
}
TASK_GATES = (
    "min_recall",
    "min_precision",
    "min_class_agreement",
    "max_score_error",
    "min_mean_iou",
    "min_pixel_agreement",
    "min_miou",
    "min_string_agreement",
    "max_cer",
)
# INT8 ranges are calibrated on images: out-of-distribution random tensors saturate them, so
# for INT8 the random inputs are reported but only the real images are gated.
GATED_INPUTS = {"int8": ("images",), "composed+int8": ("images",)}


def _loosest(kinds: list[str], table: dict[str, Thresholds]) -> dict[str, float | None]:
    """Per gate, the most permissive value among the kinds' defaults (unset in any: unset)."""
    dumps = [table[k].model_dump() for k in kinds]
    loosest: dict[str, float | None] = {}
    for gate in dumps[0]:
        values = [d[gate] for d in dumps]
        pick = min if gate.startswith("min_") else max
        loosest[gate] = None if None in values else pick(values)
    return loosest


def gates_for(kind: str, overrides: Thresholds, trained: bool) -> dict[str, float | None]:
    table = TRAINED_DEFAULTS if trained else RANDOM_WEIGHT_DEFAULTS
    gates = _loosest(kind.split("+"), table)
    gates["decided_margin"] = DECIDED_MARGIN
    gates.update(overrides.model_dump(exclude_none=True))
    return gates


def worst_cosine(report: dict) -> float:
    """The lowest cosine over every input group and output of a ``parity.json`` report."""
    return min(m["cosine_min"] for outs in report["metrics"].values() for m in outs.values())


# gate, metric it reads, direction, what a breach lists per sample
_CHECKS = (
    ("min_cosine", "cosine_min", min),
    ("max_abs_error", "max_abs_error", max),
    ("max_mean_rel_error", "mean_rel_error", max),
    ("max_kl", "kl_max", max),
    ("min_top1_agreement", "decided_top1_agreement", min),
    ("min_top5_overlap", "decided_top5_overlap", min),
)


def breaches(
    metrics: dict[str, float], gates: dict[str, float | None], samples: list[dict] | None = None
) -> list[str]:
    """Each gate ``metrics`` break, with the samples that break it (when ``samples`` is given)."""
    found = []
    for gate, metric, direction in _CHECKS:
        limit, value = gates.get(gate), metrics.get(metric)
        if limit is None or value is None:
            continue
        if (direction is min and value < limit) or (direction is max and value > limit):
            sign = "<" if direction is min else ">"
            found.append(
                f"{metric} {value:.6g} {sign} {limit:g}{_culprits(metric, limit, samples)}"
            )
    return found


def _culprits(metric: str, limit: float, samples: list[dict] | None) -> str:
    if not samples:
        return ""
    if metric == "decided_top1_agreement":
        flips = [s for s in samples if s["decided"] and s["artifact_class"] != s["reference_class"]]
        listed = [
            f"{s['name']} (class {s['reference_class']} p={s['reference_probability']:.2f}, "
            f"lead {s['margin']:.2f} → class {s['artifact_class']} "
            f"p={s['artifact_probability']:.2f})"
            for s in flips
        ]
        return f": flipped on decided {', '.join(listed)}" if listed else ""
    field, worst_first = {"cosine_min": ("cosine", False), "kl_max": ("kl", True)}.get(
        metric, (None, False)
    )
    if field is None:
        return ""
    bad = [s for s in samples if (s[field] > limit if worst_first else s[field] < limit)]
    bad.sort(key=lambda s: s[field], reverse=worst_first)
    listed = ", ".join(f"{s['name']} {s[field]:.4g}" for s in bad[:4])
    return f" (on {listed})" if listed else ""
