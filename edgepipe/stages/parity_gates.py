"""Parity gates: default thresholds per artifact kind, and checking metrics against them."""

from __future__ import annotations

__all__ = [
    "DEFAULTS",
    "GATED_INPUTS",
    "Thresholds",
    "breaches",
    "gates_for",
    "metric_table",
    "worst_cosine",
]

from pydantic import BaseModel, ConfigDict, Field


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


# Calibrated on the timm families in tests/test_families.py: fp32 exports agree to ~1e-6;
# baked-in preprocessing differs from PIL by a few grey levels at edges (see README).
DEFAULTS: dict[str, Thresholds] = {
    "fp32": Thresholds(
        min_cosine=0.9999, max_mean_rel_error=1e-3, min_top1_agreement=0.99, min_top5_overlap=0.95
    ),
    # correct compositions measured >= 0.99997 on eight families; ImageNet mean/std forced on
    # CLIP-normalised eva02 gave 0.9979 with random weights: the gate sits between the two
    "composed": Thresholds(
        min_cosine=0.9995, max_mean_rel_error=0.02, min_top1_agreement=0.95, min_top5_overlap=0.9
    ),
    "fp16": Thresholds(
        min_cosine=0.999, max_mean_rel_error=0.02, min_top1_agreement=0.95, min_top5_overlap=0.9
    ),
    "int8": Thresholds(
        min_cosine=0.98, max_mean_rel_error=0.2, min_top1_agreement=0.85, min_top5_overlap=0.8
    ),
}
CLASS_GATES = ("min_top1_agreement", "min_top5_overlap")
# INT8 ranges are calibrated on images: out-of-distribution random tensors saturate them, so
# for INT8 the random inputs are reported but only the real images are gated.
GATED_INPUTS = {"int8": ("images",), "composed+int8": ("images",)}


def _loosest(kinds: list[str]) -> dict[str, float | None]:
    """Per gate, the most permissive value among the kinds' defaults (unset in any: unset)."""
    dumps = [DEFAULTS[k].model_dump() for k in kinds]
    loosest: dict[str, float | None] = {}
    for gate in dumps[0]:
        values = [d[gate] for d in dumps]
        pick = min if gate.startswith("min_") else max
        loosest[gate] = None if None in values else pick(values)
    return loosest


def gates_for(kind: str, overrides: Thresholds, trained: bool) -> dict[str, float | None]:
    gates = _loosest(kind.split("+"))
    if not trained:  # random weights: near-tied logits make arg-max flips meaningless
        gates.update(dict.fromkeys(CLASS_GATES))
    gates.update(overrides.model_dump(exclude_none=True))
    return gates


def worst_cosine(report: dict) -> float:
    """The lowest cosine over every input group and output of a ``parity.json`` report."""
    return min(m["cosine_min"] for outs in report["metrics"].values() for m in outs.values())


def breaches(metrics: dict[str, float], gates: dict[str, float | None]) -> list[str]:
    checks = [
        ("min_cosine", "cosine_min", min),
        ("max_abs_error", "max_abs_error", max),
        ("max_mean_rel_error", "mean_rel_error", max),
        ("min_top1_agreement", "top1_agreement", min),
        ("min_top5_overlap", "top5_overlap", min),
    ]
    found = []
    for gate, metric, direction in checks:
        limit, value = gates.get(gate), metrics.get(metric)
        if limit is None or value is None:
            continue
        if (direction is min and value < limit) or (direction is max and value > limit):
            found.append(f"{metric} {value:.6g} {'<' if direction is min else '>'} {limit:g}")
    return found


def metric_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    head = (
        "| inputs | output | n | cosine min | cosine mean | max abs err | mean rel err "
        "| top-1 agree | top-5 overlap |"
    )
    rows = [head, "|" + "---|" * 9]
    for group, outputs in metrics.items():
        for name, m in outputs.items():
            rows.append(
                f"| {group} | {name} | {m['samples']} | {m['cosine_min']:.6f} | "
                f"{m['cosine_mean']:.6f} | {m['max_abs_error']:.3g} | "
                f"{m['mean_rel_error']:.3g} | {m['top1_agreement']:.2f} | "
                f"{m.get('top5_overlap', float('nan')):.2f} |"
            )
    return "\n".join(rows)
