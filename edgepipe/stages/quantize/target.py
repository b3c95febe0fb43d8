"""What a quantized model must keep — the ``target`` of a ``quantize`` stage — and how a
candidate is measured against it: fidelity to the float model it came from, and speed.

- ``metric: parity``: the parity gates of the candidate's kind (int8, or fp16 for the
  fallback) against the float input artifact, on real photos, with decided/undecided classes;
- ``metric: top1``: top-1 accuracy on a labelled ImageFolder, against the float model's.

The float input is the reference: it is what the quantizer changed, and its own parity against
the torch model is its own stage's job.
"""

from __future__ import annotations

__all__ = ["AccuracyTarget", "CandidateCheck", "Fidelity", "time_ms"]

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgepipe.errors import StageError
from edgepipe.runtimes import open_runtime
from edgepipe.stages.base import Artifact, ArtifactKind, FieldError
from edgepipe.stages.parity.gates import Thresholds, gates_for
from edgepipe.stages.quantize.calibration import model_inputs


class AccuracyTarget(BaseModel):
    """What the quantized model must keep; when plain INT8 misses it, the stage recovers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["parity", "top1"] = Field(
        default="parity",
        description=(
            "parity: the parity gates (int8 kind, or fp16 for the fallback) against the float "
            "input on real photos; top1: the top-1 drop on a labelled `dataset`."
        ),
    )
    images: Path | None = Field(
        default=None,
        description="parity: folder of photos (relative to the recipe); default: bundled photos.",
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, description="parity: overrides of the default gates."
    )
    dataset: Path | None = Field(
        default=None,
        description="top1: folder with one sub-folder of images per class (ImageFolder).",
    )
    class_map: Path | None = Field(
        default=None, description="top1: text file naming one class folder per line."
    )
    max_top1_drop: float = Field(
        default=0.01, ge=0, le=1, description="top1: largest allowed drop (fraction)."
    )
    max_images: int = Field(
        default=200, ge=1, le=100_000, description="Judge on at most this many images (100000)."
    )
    recover: bool = Field(
        default=True,
        description=(
            "Search when the configured INT8 misses: calibration methods and per-channel, then "
            "keeping the measured most sensitive nodes float, then the fallback."
        ),
    )
    max_float_nodes: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="Most nodes recovery may keep in float (tries 1, 2, 4…; at most 1000).",
    )
    fallback: Literal["fp16", "none"] = Field(
        default="fp16",
        description="Last rung: fp16 weights (ONNX Runtime fp16; OpenVINO fp16-compressed IR).",
    )

    @model_validator(mode="after")
    def _dataset_for_top1(self) -> AccuracyTarget:
        if self.metric == "top1" and self.dataset is None:
            raise FieldError("dataset", "metric: top1 needs a labelled dataset folder")
        return self


@dataclass
class Fidelity:
    """A candidate against the target: passed, one headline number, and what broke."""

    passed: bool
    headline: str
    problems: list[str] = field(default_factory=list)
    score: float = 0.0
    """Lower is closer to the float model: ranks candidates that all missed."""


# Task metrics where 1 is perfect, and errors where 0 is: a candidate's distance from perfect
_AGREEMENTS = (
    "recall",
    "precision",
    "class_agreement",
    "iou_mean",
    "miou",
    "pixel_agreement_mean",
    "string_agreement",
)
_ERRORS = ("score_max_abs_error", "cer_mean")


class CandidateCheck:
    """Measures candidates against one target; the float model's outputs are computed once."""

    def __init__(self, target: AccuracyTarget, source: Artifact, recipe_dir: Path):
        self.target, self.source = target, source
        self.trained = source.meta.get("weights") in ("pretrained", "checkpoint")
        self.task = source.meta.get("task", "classification")
        reference = open_runtime(source)
        if target.metric == "top1":
            if self.task != "classification":
                raise StageError(
                    f"target metric top1 measures classifiers; this is a {self.task} model: "
                    "use target: {metric: parity}, which gates its own metrics"
                )
            self._init_top1(recipe_dir)
        else:
            from edgepipe.stages.parity.task_report import task_images

            folder = recipe_dir / target.images if target.images else None
            named = task_images(self.task, folder, target.max_images, 0, source.meta)
            self.names = [name for name, _ in named]
            self.inputs = model_inputs([image for _, image in named], source.meta)
        self.reference = [reference.forward(x) for x in self.inputs]
        del reference

    def _init_top1(self, recipe_dir: Path) -> None:
        from PIL import Image

        from edgepipe.stages.evaluate import labelled_images

        class_map = recipe_dir / self.target.class_map if self.target.class_map else None
        samples = labelled_images(recipe_dir / self.target.dataset, class_map)
        samples = samples[: self.target.max_images]
        images = []
        for path, _ in samples:
            with Image.open(path) as opened:
                images.append(opened.convert("RGB"))
        self.labels = [label for _, label in samples]
        self.inputs = model_inputs(images, self.source.meta)

    def open(self, folder: Path, meta: dict[str, Any], kind: ArtifactKind) -> Any:
        """A candidate in ``folder``, of ``kind``."""
        return open_runtime(Artifact(kind, folder, meta, folder.name))

    def measure(self, candidate: Any, precision: str) -> Fidelity:
        outputs = [candidate.forward(x) for x in self.inputs]
        if self.target.metric == "top1":
            return self._top1(outputs, candidate)
        return self._parity(outputs, candidate, precision)

    def _parity(self, outputs: list, candidate: Any, precision: str) -> Fidelity:
        from edgepipe.stages.parity.compare import compare

        if self.task != "classification":
            return self._task_parity(outputs, precision)

        gates = gates_for(precision, self.target.thresholds, self.trained)
        compared = compare(self.names, self.reference, outputs, candidate, gates["decided_margin"])
        problems = compared.breaches(gates)
        first = next(iter(compared.metrics.values()))
        kl = first.get("kl_max")
        headline = f"cosine min {first['cosine_min']:.4f}" + (
            f", KL max {kl:.3g}" if kl is not None else ""
        )
        decided = first.get("decided_top1_agreement")
        if decided is not None:
            headline += f", decided top-1 {decided:.2f}"
        score = (kl if self.trained and kl is not None else 1 - first["cosine_min"]) + len(problems)
        return Fidelity(not problems, headline, problems, score)

    def _task_parity(self, outputs: list, precision: str) -> Fidelity:
        from edgepipe.stages.parity.tasks import compare_task, task_gates
        from edgepipe.tasks.options import DetectionMatching

        compared = compare_task(
            self.task, self.names, self.reference, outputs, self.source.meta, DetectionMatching()
        )
        problems = compared.breaches(task_gates(self.task, precision, self.target.thresholds))
        metrics = next(iter(compared.metrics.values()))
        shown = [(k, v) for k, v in metrics.items() if k != "samples" and isinstance(v, float)]
        headline = ", ".join(f"{k} {v:.4g}" for k, v in shown[:3])
        # how far from perfect, to rank candidates that all pass: 1 - each agreement, + errors
        shortfall = sum(1 - v for k, v in shown if k in _AGREEMENTS) + sum(
            v for k, v in shown if k in _ERRORS
        )
        return Fidelity(not problems, headline, problems, len(problems) + shortfall)

    def _top1(self, outputs: list, candidate: Any) -> Fidelity:
        import numpy as np

        def top1(runs: list, ranked_by_indices: bool) -> float:
            # a top-k graph outputs (scores, indices), already ranked
            picks = [int(r[1][0][0] if ranked_by_indices else np.argmax(r[0][0])) for r in runs]
            hits = [pick == label for pick, label in zip(picks, self.labels, strict=True)]
            return float(np.mean(hits))

        topk = candidate.postprocess == "topk"
        float_top1, cand_top1 = top1(self.reference, topk), top1(outputs, topk)
        drop = float_top1 - cand_top1
        headline = f"top-1 {cand_top1:.4f} vs float {float_top1:.4f} (drop {drop:+.4f})"
        problems = (
            [f"top-1 dropped by {drop:.4f} (allowed {self.target.max_top1_drop})"]
            if drop > self.target.max_top1_drop
            else []
        )
        return Fidelity(not problems, headline, problems, drop)


def time_ms(candidate: Any, sample: Any, seconds: float = 0.5, warmup: int = 3) -> float:
    """Median latency of one sample (ms): enough to rank candidates, not a benchmark."""
    for _ in range(warmup):
        candidate.forward(sample)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - started < seconds and len(times) < 200):
        begin = time.perf_counter()
        candidate.forward(sample)
        times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1000.0
