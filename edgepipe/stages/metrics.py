"""Agreement between a reference model's outputs and a converted artifact's outputs."""

from __future__ import annotations

__all__ = ["agreement", "softmax"]

from typing import Any


def softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def agreement(reference: Any, candidate: Any) -> dict[str, float]:
    """Metrics over rows of [N, K] outputs.

    Cosine is taken on *mean-centred* rows: with random weights the logits of every class share a
    large common offset, which makes plain cosine ~1 even for a broken model (MEASUREMENTS #9).
    """
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {cand.shape}")
    diff = np.abs(ref - cand)
    ref_c = ref - ref.mean(axis=1, keepdims=True)
    cand_c = cand - cand.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ref_c, axis=1) * np.linalg.norm(cand_c, axis=1)
    cosine = np.where(norms > 0, (ref_c * cand_c).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    metrics = {
        "samples": int(len(ref)),
        "max_abs_error": float(diff.max()),
        "mean_rel_error": float(diff.mean() / max(np.abs(ref).mean(), 1e-12)),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top1_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
    }
    if ref.shape[1] >= 5:
        top_ref = np.argsort(-ref, axis=1)[:, :5]
        top_cand = np.argsort(-cand, axis=1)[:, :5]
        overlap = [len(set(a) & set(b)) / 5 for a, b in zip(top_ref, top_cand, strict=True)]
        metrics["top5_overlap"] = float(np.mean(overlap))
    return metrics
