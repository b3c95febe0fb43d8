"""Agreement between a reference model's outputs and a converted artifact's outputs.

Two kinds of numbers, because each hides what the other shows:

- *logit space*: cosine of mean-centred rows, absolute and relative error. With random weights
  every class shares a large offset and logits are flat: centring keeps cosine honest there
  (MEASUREMENTS #9).
- *probability space*: KL divergence and probability error of the softmax. A change of the
  logits by ``d`` moves KL by about half the variance of ``d`` under the reference's
  distribution, whether the reference is confident or undecided; the centred cosine of an
  undecided (flat) row, by contrast, drops for the same ``d``.

Class agreement separates *decided* samples — the reference's top class beats its runner-up by
at least ``margin`` in probability — from undecided ones, where a flip says nothing about the
artifact (retina: 0.13 vs 0.12). Only decided samples count against a class gate.
"""

from __future__ import annotations

__all__ = ["DECIDED_MARGIN", "agreement", "per_sample", "probabilities", "softmax"]

from typing import Any

DECIDED_MARGIN = 0.1
"""Default: the reference is decided when its top probability beats the second by 0.1."""


def softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def probabilities(rows: Any, space: str) -> Any:
    """Rows as probability distributions: softmax of logits; probabilities stay as they are."""
    import numpy as np

    if space == "probabilities":
        return np.clip(rows, 0.0, None) / np.maximum(rows.sum(axis=1, keepdims=True), 1e-300)
    return softmax(rows)


def _rows(values: Any) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.float64).reshape(len(values), -1)


def _centred_cosine(ref: Any, cand: Any) -> Any:
    import numpy as np

    ref_c = ref - ref.mean(axis=1, keepdims=True)
    cand_c = cand - cand.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ref_c, axis=1) * np.linalg.norm(cand_c, axis=1)
    return np.where(norms > 0, (ref_c * cand_c).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)


def _kl(p: Any, q: Any) -> Any:
    """KL(p || q) per row, in nats."""
    import numpy as np

    q = np.maximum(q, 1e-12)
    return np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - np.log(q)), 0.0).sum(axis=1)


def _margins(probs: Any) -> tuple[Any, Any, Any]:
    """Per row: top class, its probability, and its lead over the second class."""
    import numpy as np

    top2 = np.argsort(-probs, axis=1)[:, :2]
    first = np.take_along_axis(probs, top2[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(probs, top2[:, 1:2], axis=1)[:, 0]
    return top2[:, 0], first, first - second


def _top5_overlap(ref: Any, cand: Any) -> Any:
    import numpy as np

    top_ref = np.argsort(-ref, axis=1)[:, :5]
    top_cand = np.argsort(-cand, axis=1)[:, :5]
    return np.array([len(set(a) & set(b)) / 5 for a, b in zip(top_ref, top_cand, strict=True)])


def agreement(
    reference: Any, candidate: Any, space: str = "logits", margin: float = DECIDED_MARGIN
) -> dict[str, float]:
    """Metrics over rows of [N, K] outputs (``space``: what the rows hold)."""
    import numpy as np

    ref, cand = _rows(reference), _rows(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {cand.shape}")
    diff = np.abs(ref - cand)
    cosine = _centred_cosine(ref, cand)
    metrics: dict[str, Any] = {
        "samples": int(len(ref)),
        "max_abs_error": float(diff.max()),
        "mean_rel_error": float(diff.mean() / max(np.abs(ref).mean(), 1e-12)),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
    }
    if ref.shape[1] < 2:
        return metrics
    p, q = probabilities(ref, space), probabilities(cand, space)
    kl = _kl(p, q)
    _, _, lead = _margins(p)
    decided = lead >= margin
    same = ref.argmax(1) == cand.argmax(1)
    metrics.update(
        prob_max_abs_error=float(np.abs(p - q).max()),
        kl_mean=float(kl.mean()),
        kl_max=float(kl.max()),
        decided=int(decided.sum()),
        decided_top1_agreement=float(same[decided].mean()) if decided.any() else None,
    )
    if ref.shape[1] >= 5:
        overlap = _top5_overlap(ref, cand)
        metrics["top5_overlap"] = float(overlap.mean())
        metrics["decided_top5_overlap"] = float(overlap[decided].mean()) if decided.any() else None
    return metrics


def per_sample(
    reference: Any,
    candidate: Any,
    names: list[str],
    space: str = "logits",
    margin: float = DECIDED_MARGIN,
) -> list[dict[str, Any]]:
    """One record per sample: the reference's class, probability and lead over its runner-up,
    the artifact's class and probability, the centred cosine and the KL divergence."""
    ref, cand = _rows(reference), _rows(candidate)
    p, q = probabilities(ref, space), probabilities(cand, space)
    ref_class, ref_prob, lead = _margins(p)
    cand_class, cand_prob, _ = _margins(q)
    cosine, kl = _centred_cosine(ref, cand), _kl(p, q)
    return [
        {
            "name": names[i],
            "reference_class": int(ref_class[i]),
            "reference_probability": float(ref_prob[i]),
            "margin": float(lead[i]),
            "decided": bool(lead[i] >= margin),
            "artifact_class": int(cand_class[i]),
            "artifact_probability": float(cand_prob[i]),
            "cosine": float(cosine[i]),
            "kl": float(kl[i]),
        }
        for i in range(len(ref))
    ]
