"""Markdown for ``parity.md`` and the failure message: the metric table per input group and
output, and one row per sample saying whether the artifact kept the reference's class."""

from __future__ import annotations

__all__ = ["class_namer", "metric_table", "sample_table", "verdict"]

from collections.abc import Callable
from typing import Any


def _number(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def metric_table(metrics: dict[str, dict[str, dict[str, Any]]]) -> str:
    head = (
        "| inputs | output | n | cosine min | cosine mean | max abs err | mean rel err "
        "| KL max | top-1 agree (decided) | top-5 overlap (decided) |"
    )
    rows = [head, "|" + "---|" * 10]
    for group, outputs in metrics.items():
        for name, m in outputs.items():
            decided = m.get("decided")
            rows.append(
                f"| {group} | {name} | {m['samples']} | {m['cosine_min']:.6f} | "
                f"{m['cosine_mean']:.6f} | {m['max_abs_error']:.3g} | "
                f"{m['mean_rel_error']:.3g} | {_number(m.get('kl_max'), '.3g')} | "
                f"{m['top1_agreement']:.2f} ({_number(m.get('decided_top1_agreement'), '.2f')} "
                f"of {decided if decided is not None else '—'}) | "
                f"{_number(m.get('top5_overlap'), '.2f')} "
                f"({_number(m.get('decided_top5_overlap'), '.2f')}) |"
            )
    return "\n".join(rows)


def verdict(sample: dict[str, Any]) -> str:
    if sample["artifact_class"] == sample["reference_class"]:
        return "same class"
    return "FLIP" if sample["decided"] else "flip, undecided (not gated)"


def sample_table(samples: list[dict[str, Any]], name_of: Callable[[int], str]) -> str:
    """One row per sample: what the reference decided, how firmly, and what the artifact did."""
    rows = [
        "| input | reference class | p | lead over 2nd | artifact class | p | cosine | KL "
        "| verdict |",
        "|" + "---|" * 9,
    ]
    for s in samples:
        artifact = (
            "same" if s["artifact_class"] == s["reference_class"] else name_of(s["artifact_class"])
        )
        rows.append(
            f"| {s['name']} | {name_of(s['reference_class'])} | "
            f"{s['reference_probability']:.3f} | {s['margin']:.3f} | {artifact} | "
            f"{s['artifact_probability']:.3f} | {s['cosine']:.6f} | {s['kl']:.2g} | "
            f"{verdict(s)} |"
        )
    return "\n".join(rows)


def class_namer(classes: int) -> Callable[[int], str]:
    """Readable class names for ImageNet-1k outputs (timm ships them); indices otherwise."""
    if classes == 1000:
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            return lambda i: f"{i} {info.index_to_description(i).split(',')[0]}"
        except (ImportError, OSError):  # an older timm: indices are still exact
            pass
    return str
