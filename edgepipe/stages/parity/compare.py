"""Compare the reference's and the artifact's outputs on one group of inputs: metrics per
output, and a per-sample record for the class output. Post-processed artifacts (softmax, top-k)
are compared like for like, in probability space."""

from __future__ import annotations

__all__ = ["Comparison", "compare"]

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgepipe.stages.parity.gates import breaches
from edgepipe.stages.parity.metrics import agreement, per_sample, softmax
from edgepipe.stages.parity.tables import class_namer


@dataclass
class Comparison:
    """Metrics per output over a group of samples, and one record per sample for
    ``class_output`` (the first output, when it has two classes or more)."""

    metrics: dict[str, dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    class_output: str | None = None
    name_of: Callable[[int], str] = str

    def breaches(self, gates: dict[str, Any]) -> list[str]:
        """``"output: breach"`` for every gate an output breaks (class gates on the class
        output's per-sample records)."""
        return [
            f"{output}: {breach}"
            for output, metrics in self.metrics.items()
            for breach in breaches(
                metrics, gates, self.samples if output == self.class_output else None
            )
        ]


def compare(names: list[str], ref_runs: list, cand_runs: list, candidate, margin: float):
    """``ref_runs``/``cand_runs``: per sample, the list of output arrays of each model."""
    outputs, space = _aligned(ref_runs, cand_runs, candidate)
    metrics = {name: agreement(ref, cand, space, margin) for name, (ref, cand) in outputs.items()}
    first, (ref, cand) = next(iter(outputs.items()))
    rows = ref.reshape(len(ref), -1)
    if rows.shape[1] < 2:
        return Comparison(metrics)
    return Comparison(
        metrics,
        per_sample(ref, cand, names, space, margin),
        first,
        class_namer(rows.shape[1]),
    )


def _aligned(ref_runs: list, cand_runs: list, candidate) -> tuple[dict[str, tuple], str]:
    """(reference, artifact) arrays per output name, and what the class output holds."""
    import numpy as np

    def stacked(runs: list, index: int) -> Any:
        return np.concatenate([run[index] for run in runs])

    ref_logits = stacked(ref_runs, 0)
    if candidate.postprocess == "softmax":
        return {"probabilities": (softmax(ref_logits), stacked(cand_runs, 0))}, "probabilities"
    if candidate.postprocess == "topk":
        # the artifact's top-k probabilities written into torch's: they differ only where wrong
        scores, indices = stacked(cand_runs, 0), stacked(cand_runs, 1).astype(np.int64)
        probs = softmax(ref_logits)
        filled = probs.copy()
        np.put_along_axis(filled, indices, scores, axis=1)
        return {"topk": (probs, filled)}, "probabilities"
    names = candidate.output_names
    return {
        (names[i] if i < len(names) else f"output{i}"): (
            stacked(ref_runs, i),
            stacked(cand_runs, i),
        )
        for i in range(len(ref_runs[0]))
    }, "logits"
