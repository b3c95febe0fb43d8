"""``parity``: an artifact must compute what its source torch model computes — on real photos
and on seeded random inputs — or the run fails with the metric table."""

from __future__ import annotations

__all__ = ["ParitySpec", "ParityStage", "Thresholds"]

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.imaging.samples import BUNDLED_PHOTO_TOOLS, describe_images, load_images
from edgepipe.runtimes import open_runtime
from edgepipe.runtimes.torch_eager import open_reference, run_on_image
from edgepipe.spec_bounds import MAX_CHECK_INPUTS
from edgepipe.stages.base import (
    StageContext,
    VerificationSpec,
    VerificationStage,
    register_stage,
)
from edgepipe.stages.parity.compare import Comparison, compare
from edgepipe.stages.parity.gates import (
    GATED_INPUTS,
    Thresholds,
    gates_for,
    worst_cosine,
)
from edgepipe.stages.parity.tables import metric_table, sample_table
from edgepipe.stages.parity.task_report import (
    describe_task_images,
    task_headline,
    task_images,
    task_markdown,
    task_summary,
)
from edgepipe.stages.parity.tasks import compare_task, task_gates
from edgepipe.tasks.options import DetectionMatching


class ParitySpec(VerificationSpec):
    """Compare an artifact with the torch model it came from."""

    type: Literal["parity"] = Field(description="Stage type.")
    key_when_set: ClassVar[tuple[str, ...]] = ("detection",)
    images: Path | None = Field(
        default=None,
        description=(
            "Folder of sample images (relative to the recipe); default: the everyday photos "
            "that scikit-image and matplotlib ship (see README), or for a text recogniser "
            "(task: sequence) lines of its alphabet rendered with Pillow's own font."
        ),
    )
    max_images: int = Field(
        default=16, ge=0, le=10_000, description="Use at most this many images (at most 10000)."
    )
    random_inputs: int = Field(
        default=4,
        ge=0,
        le=MAX_CHECK_INPUTS,
        description=f"Seeded random inputs to add (at most {MAX_CHECK_INPUTS}).",
    )
    seed: int = Field(default=0, description="Seed for the random inputs.")
    kind: Literal["auto", "fp32", "composed", "fp16", "int8", "composed+fp16", "composed+int8"] = (
        Field(
            default="auto",
            description=(
                "Which default thresholds apply; "
                "auto reads the artifact (precision, baked preprocessing)."
            ),
        )
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, description=("Overrides of the default gates.")
    )
    detection: DetectionMatching = Field(
        default_factory=DetectionMatching,
        description="Detectors: which detections are compared, and when two boxes match.",
    )

    def dir_fields(self) -> dict[str, Path]:
        return {"images": self.images} if self.images is not None else {}


@register_stage
class ParityStage(VerificationStage):
    type = "parity"
    spec_class = ParitySpec
    version = 2  # 2: per-sample table, KL, class gates on decided samples, default photos
    summary = "Compare an artifact with its source torch model on real photos and random inputs."
    reports = True

    def headline(self, files: dict[str, Path]) -> dict[str, Any]:
        if "parity.json" not in files:
            return {}
        report = json.loads(files["parity.json"].read_text())
        verdict = {
            "passed": report["passed"],
            "kind": report["kind"],
            "thresholds": report["thresholds"],
        }
        return {"parity": verdict | ({"task": report["task"]} if "task" in report else {})}

    def measurements(self, files: dict[str, Path]) -> dict[str, Any]:
        if "parity.json" not in files:
            return {}
        report = json.loads(files["parity.json"].read_text())
        if "task" in report:
            return {k: v for k, v in task_summary(report).items() if k != "task"}
        return {"worst_cosine": round(worst_cosine(report), 6)}

    def report_row(self, stage_id: str, files: dict[str, Path]) -> str | None:
        report = json.loads(files["parity.json"].read_text())
        if "task" in report:
            summary = task_headline(report)
            return (
                f"| {stage_id} | parity ({report['kind']}, {report['task']}) | passed | {summary} |"
            )
        worst = worst_cosine(report)
        return f"| {stage_id} | parity ({report['kind']}) | passed | worst cosine {worst:.6f} |"

    def tools_for(self, spec: ParitySpec) -> tuple[str, ...]:
        # the default photos come from scikit-image and matplotlib; a recipe's folder needs neither
        return self.tools if spec.images else (*self.tools, *BUNDLED_PHOTO_TOOLS)

    def run(self, spec: ParitySpec, ctx: StageContext) -> dict[str, Any]:
        artifact, source = ctx.inputs
        reference = open_reference(source, ctx.recipe_dir)
        candidate = open_runtime(artifact)
        kind = _kind(spec, candidate)
        if reference.task != "classification":
            return self._run_task(spec, ctx, reference, candidate, kind)
        images = load_images(ctx.resolve(spec.images) if spec.images else None, spec.max_images)
        gates = gates_for(
            kind, spec.thresholds, trained=reference.weights in ("pretrained", "checkpoint")
        )
        compared = {
            "images": _on_images(reference, candidate, images),
            "random": _on_random(reference, candidate, spec),
        }
        compared = {
            group: compare(names, ref, cand, candidate, gates["decided_margin"])
            for group, (names, ref, cand) in compared.items()
            if names
        }
        gated = GATED_INPUTS.get(kind, ("images", "random"))
        if not any(g in compared for g in gated):
            raise StageError(
                f"nothing to gate: a {kind} artifact is judged on {' and '.join(gated)}, and "
                f"max_images: {spec.max_images}, random_inputs: {spec.random_inputs} gave none"
            )
        metrics = {group: c.metrics for group, c in compared.items()}
        failed = [
            f"{group}/{breach}"
            for group, c in compared.items()
            if group in gated
            for breach in c.breaches(gates)
        ]
        report = {
            "kind": kind,
            "weights": reference.weights,
            "thresholds": gates,
            "images": describe_images(spec.images, [name for name, _ in images]),
            "metrics": metrics,
            "samples": {group: c.samples for group, c in compared.items()},
            "passed": not failed,
            "breaches": failed,
        }
        return _verdict(report, _markdown(report, compared), ctx, artifact)

    def _run_task(self, spec: ParitySpec, ctx: StageContext, reference, candidate, kind: str):
        """Detection, segmentation and sequence models: their own metrics, on real images only
        (random tensors give a detector nothing to find and a recogniser no text)."""
        task = reference.task
        folder = ctx.resolve(spec.images) if spec.images else None
        images = task_images(task, folder, spec.max_images, spec.seed, reference.artifact.meta)
        if spec.random_inputs:
            ctx.log.info(
                "random inputs are not used for a %s model: its metrics need content", task
            )
        if not images:
            raise StageError(f"nothing to gate: max_images: {spec.max_images} gave no images")
        names, ref_runs, cand_runs = _on_images(reference, candidate, images)
        comparison = compare_task(
            task, names, ref_runs, cand_runs, reference.artifact.meta, spec.detection
        )
        gates = task_gates(task, kind, spec.thresholds)
        failed = [f"images/{breach}" for breach in comparison.breaches(gates)]
        report = {
            "task": task,
            "kind": kind,
            "weights": reference.weights,
            "thresholds": gates,
            "images": describe_task_images(task, spec.images, names),
            "metrics": {"images": comparison.metrics},
            "samples": {"images": comparison.samples},
            "passed": not failed,
            "breaches": failed,
        }
        if task == "detection":
            report["matching"] = spec.detection.model_dump()
        return _verdict(report, task_markdown(report), ctx, candidate.artifact)


def _verdict(report: dict[str, Any], text: str, ctx: StageContext, artifact) -> dict[str, Any]:
    """Write the report; raise with the breaches and the tables when a gate failed."""
    (ctx.out_dir / "parity.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (ctx.out_dir / "parity.md").write_text(text + "\n")
    kind = report["kind"]
    ctx.log.info("parity (%s thresholds):\n%s", kind, text)
    if report["breaches"]:
        hint = _RECOVERY_HINT if "int8" in kind else ""
        raise StageError(
            "parity gate failed: " + "; ".join(report["breaches"]) + hint + "\n" + text
        )
    # the checked artifact by content, so a benchmark report can show this verdict beside it
    meta = {
        "passed": True,
        "kind": kind,
        "metrics": report["metrics"],
        "artifact_digest": artifact.digest,
    }
    if "task" in report:  # a benchmark table shows the task's own metrics beside the row
        meta["task_headline"] = task_headline(report)
    return meta


_RECOVERY_HINT = (
    ". An INT8 artifact that misses its gates can recover by itself: give its quantize stage "
    "`target: {metric: parity}` (README, 'Quantization that keeps its accuracy')"
)


def _markdown(report: dict[str, Any], compared: dict[str, Comparison]) -> str:
    parts = [metric_table(report["metrics"])]
    for group, c in compared.items():
        if c.samples:
            parts.append(f"{group} ({c.class_output}):\n\n" + sample_table(c.samples, c.name_of))
    used = report["images"]
    parts.append(f"Images: {used['source']}: {', '.join(used['names']) or 'none'}.")
    return "\n\n".join(parts)


def _on_images(reference, candidate, images) -> tuple[list, list, list]:
    pairs = [run_on_image(reference, candidate, image) for _name, image in images]
    return [name for name, _ in images], [ref for ref, _ in pairs], [cand for _, cand in pairs]


def _on_random(reference, candidate, spec: ParitySpec) -> tuple[list, list, list]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(spec.seed)
    names, ref_out, cand_out = [], [], []
    for index in range(spec.random_inputs):
        if candidate.composed:  # random photos-sized noise through both preprocessings
            size = (int(rng.integers(200, 400)), int(rng.integers(200, 400)), 3)
            noise = Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))
            ref, cand = run_on_image(reference, candidate, noise)
            names.append(f"noise-{index}")
        else:
            shape = (1, *reference.data_config["input_size"])
            tensor = rng.standard_normal(shape).astype(np.float32)
            ref, cand = reference.forward(tensor), candidate.forward(tensor)
            names.append(f"random-{index}")
        ref_out.append(ref)
        cand_out.append(cand)
    return names, ref_out, cand_out


def _kind(spec: ParitySpec, candidate) -> str:
    if spec.kind != "auto":
        return spec.kind
    if candidate.precision in ("int8", "fp16"):
        # reduced precision with baked-in preprocessing: both sources of error apply
        return f"composed+{candidate.precision}" if candidate.composed else candidate.precision
    return "composed" if candidate.composed else "fp32"
