"""``evaluate``: top-1/top-5 accuracy of an artifact vs its torch model on a labelled folder
(timm's ``onnx_validate.py`` job, inside the pipeline), gated on the accuracy drop. Detectors,
segmenters and text recognisers get their task's metric instead (``evaluate_tasks``)."""

from __future__ import annotations

__all__ = ["EvaluateSpec", "EvaluateStage", "labelled_images"]

import itertools
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.imaging.samples import find_images
from edgepipe.runtimes import open_runtime
from edgepipe.runtimes.torch_eager import TorchEager, open_reference, run_on_image
from edgepipe.stages.base import (
    StageContext,
    VerificationSpec,
    VerificationStage,
    register_stage,
)
from edgepipe.stages.evaluate_tasks import PRIMARY_METRIC, evaluate_task


class EvaluateSpec(VerificationSpec):
    """Accuracy on an ImageFolder-style directory: one sub-folder of images per class."""

    type: Literal["evaluate"] = Field(description="Stage type.")
    key_when_set: ClassVar[tuple[str, ...]] = ("annotations", "max_drop")
    dataset: Path = Field(
        description="Folder with one sub-folder per class (relative to the recipe). Detection: "
        "the images of `annotations`; segmentation: images/ and masks/ (class-id PNGs); "
        "sequence: images and labels.txt ('<file name><TAB><text>' per line)."
    )
    annotations: Path | None = Field(
        default=None,
        description="Detection: COCO annotation file (JSON) of the dataset's images.",
    )
    max_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detection, segmentation, sequence: fail when the artifact's COCO mAP, mIoU "
        "or exact-match text accuracy is this much below the torch model's (default: "
        "max_top1_drop).",
    )
    class_map: Path | None = Field(
        default=None,
        description=(
            "Text file naming one class folder per line; line N is class index N. Default: sorted "
            "folder names (torchvision ImageFolder order, which matches ImageNet's wnid folders)."
        ),
    )
    max_images: int | None = Field(default=None, ge=1, description="Evaluate at most this many.")
    max_top1_drop: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "Fail when the artifact's top-1 is this much (fraction) below the torch model's."
        ),
    )
    min_top1: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=("Fail when the artifact's top-1 accuracy is below this fraction."),
    )

    def file_fields(self) -> dict[str, Path]:
        named = (("class_map", self.class_map), ("annotations", self.annotations))
        return {name: path for name, path in named if path is not None}

    def dir_fields(self) -> dict[str, Path]:
        return {"dataset": self.dataset}


@register_stage
class EvaluateStage(VerificationStage):
    type = "evaluate"
    spec_class = EvaluateSpec
    version = 2  # 2: top-k graphs ranked by indices; max_images spread over classes
    summary = "Top-1/top-5 accuracy of an artifact vs its torch model on a labelled folder."
    reports = True

    def headline(self, files: dict[str, Path]) -> dict[str, Any]:
        if "evaluate.json" not in files:
            return {}
        report = json.loads(files["evaluate.json"].read_text())
        # written only when every gate passed (else the stage failed): the gates are its spec's
        return {
            "evaluate": {
                "passed": True,
                "metric": report.get("metric", "top1"),
                "images": report["images"],
            }
        }

    def measurements(self, files: dict[str, Path]) -> dict[str, Any]:
        if "evaluate.json" not in files:
            return {}
        report = json.loads(files["evaluate.json"].read_text())
        # classification: top1/top5 per side and top1_drop; tasks: their metrics and drop
        sides = {
            f"{side}_{name}": value
            for side in ("torch", "artifact")
            for name, value in (report.get(side) or {}).items()
        }
        numbers = sides | {k: v for k, v in report.items() if k not in ("torch", "artifact")}
        return {
            name: round(value, 6)
            for name, value in numbers.items()
            if isinstance(value, float) and name != "images"
        }

    def report_row(self, stage_id: str, files: dict[str, Path]) -> str | None:
        result = json.loads(files["evaluate.json"].read_text())
        if "metric" in result:
            metric = result["metric"]
            return (
                f"| {stage_id} | evaluate | passed | {metric} {result['artifact'][metric]:.4f} "
                f"vs torch {result['torch'][metric]:.4f} on {result['images']} images |"
            )
        return (
            f"| {stage_id} | evaluate | passed | top-1 {result['artifact']['top1']:.4f} vs torch "
            f"{result['torch']['top1']:.4f} on {result['images']} images |"
        )

    def tools_for(self, spec: EvaluateSpec) -> tuple[str, ...]:
        # COCO mAP is pycocotools' (the `detection` extra)
        return (*self.tools, "pycocotools") if spec.annotations else self.tools

    def run(self, spec: EvaluateSpec, ctx: StageContext) -> dict[str, Any]:
        artifact, source = ctx.inputs
        task = source.meta.get("task", "classification")
        if task != "classification":
            return self._run_task(spec, ctx, task)
        samples = labelled_images(
            ctx.resolve(spec.dataset), ctx.resolve(spec.class_map) if spec.class_map else None
        )
        samples = samples[: spec.max_images] if spec.max_images else samples
        reference, candidate = open_reference(source, ctx.recipe_dir), open_runtime(artifact)
        hits = {"torch": [0, 0], "artifact": [0, 0]}
        for path, label in samples:
            for name, ranked in zip(hits, _ranked_classes(reference, candidate, path), strict=True):
                hits[name][0] += int(ranked[0] == label)
                hits[name][1] += int(label in ranked[:5])
        count = len(samples)
        result = {name: {"top1": h[0] / count, "top5": h[1] / count} for name, h in hits.items()}
        result["images"] = count
        result["top1_drop"] = result["torch"]["top1"] - result["artifact"]["top1"]
        (ctx.out_dir / "evaluate.json").write_text(json.dumps(result, indent=2, sort_keys=True))
        ctx.log.info(
            "top-1 torch %.4f, artifact %.4f (%d images)",
            result["torch"]["top1"],
            result["artifact"]["top1"],
            count,
        )
        _gate(result, spec)
        return result

    def _run_task(self, spec: EvaluateSpec, ctx: StageContext, task: str) -> dict[str, Any]:
        artifact, source = ctx.inputs
        reference, candidate = open_reference(source, ctx.recipe_dir), open_runtime(artifact)
        annotations = ctx.resolve(spec.annotations) if spec.annotations else None
        result = evaluate_task(
            task, reference, candidate, ctx.resolve(spec.dataset), annotations, spec.max_images
        )
        metric = PRIMARY_METRIC[task]
        torch_value, value = result["torch"][metric], result["artifact"][metric]
        result["drop"] = None if None in (torch_value, value) else torch_value - value
        (ctx.out_dir / "evaluate.json").write_text(json.dumps(result, indent=2, sort_keys=True))
        ctx.log.info(
            "%s: torch %s, artifact %s (%d images)", metric, torch_value, value, result["images"]
        )
        allowed = spec.max_top1_drop if spec.max_drop is None else spec.max_drop
        if result["drop"] is None:
            raise StageError(f"{metric} could not be measured: no ground truth in {spec.dataset}")
        if result["drop"] > allowed:
            raise StageError(
                f"accuracy gate failed: {metric} dropped by {result['drop']:.4f} (allowed "
                f"{allowed}) — torch {torch_value:.4f}, artifact {value:.4f} on "
                f"{result['images']} images"
            )
        return result


def labelled_images(root: Path, class_map: Path | None) -> list[tuple[Path, int]]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_map is not None:
        names = [line.strip() for line in class_map.read_text().splitlines() if line.strip()]
        unknown = sorted(set(folders) - set(names))
        if unknown:
            raise StageError(f"class folders missing from {class_map.name}: {unknown[:5]}")
    else:
        names = folders
    if not folders:
        raise StageError(f"{root} has no class sub-folders (expected <class>/<image> files)")
    index = {name: i for i, name in enumerate(names)}
    per_class = [[(path, index[f]) for path in find_images(root / f)] for f in folders]
    # round-robin over the classes, so that max_images takes from every class, not the first
    samples = [s for group in itertools.zip_longest(*per_class) for s in group if s is not None]
    if not samples:
        raise StageError(f"no images in the class folders under {root}")
    return samples


def _ranked_classes(reference: TorchEager, candidate, path: Path):
    """Class indices, most likely first, by the torch model and by the artifact."""
    from PIL import Image

    with Image.open(path) as opened:
        ref_outputs, outputs = run_on_image(reference, candidate, opened.convert("RGB"))
    ref = ref_outputs[0][0].argsort()[::-1]
    if candidate.postprocess == "topk":  # (scores, indices), already ranked
        return ref, outputs[1][0]
    return ref, outputs[0][0].argsort()[::-1]


def _gate(result: dict[str, Any], spec: EvaluateSpec) -> None:
    problems = []
    if result["top1_drop"] > spec.max_top1_drop:
        problems.append(
            f"top-1 dropped by {result['top1_drop']:.4f} (allowed {spec.max_top1_drop})"
        )
    if spec.min_top1 is not None and result["artifact"]["top1"] < spec.min_top1:
        problems.append(f"top-1 {result['artifact']['top1']:.4f} < {spec.min_top1}")
    if problems:
        torch_acc, art_acc = result["torch"], result["artifact"]
        raise StageError(
            "accuracy gate failed: " + "; ".join(problems) + f" — torch top-1/5 "
            f"{torch_acc['top1']:.4f}/{torch_acc['top5']:.4f}, artifact "
            f"{art_acc['top1']:.4f}/{art_acc['top5']:.4f} on {result['images']} images"
        )
