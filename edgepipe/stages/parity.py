"""``parity``: an artifact must compute what its source torch model computes — on real photos
and on seeded random inputs — or the run fails with the metric table."""

from __future__ import annotations

__all__ = ["ParitySpec", "ParityStage", "Thresholds"]

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.stages.base import StageContext, register_stage
from edgepipe.stages.inference import (
    TorchReference,
    VerificationSpec,
    VerificationStage,
    open_candidate,
    run_on_image,
)
from edgepipe.stages.metrics import agreement, softmax
from edgepipe.stages.parity_gates import (
    GATED_INPUTS,
    Thresholds,
    breaches,
    gates_for,
    metric_table,
)
from edgepipe.stages.samples import load_images


class ParitySpec(VerificationSpec):
    """Compare an artifact with the torch model it came from."""

    type: Literal["parity"] = Field(description="Stage type.")
    images: Path | None = Field(
        default=None,
        description=(
            "Folder of sample images (relative to the recipe); default: scikit-image's photos."
        ),
    )
    max_images: int = Field(default=8, ge=0, description="Use at most this many images.")
    random_inputs: int = Field(default=4, ge=0, description="Seeded random inputs to add.")
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

    def dir_fields(self) -> dict[str, Path]:
        return {"images": self.images} if self.images is not None else {}


@register_stage
class ParityStage(VerificationStage):
    type = "parity"
    spec_class = ParitySpec
    version = 1
    summary = "Compare an artifact with its source torch model on real photos and random inputs."

    def tools_for(self, spec: ParitySpec) -> tuple[str, ...]:
        # the default photos come from scikit-image; a recipe's own folder does not need it
        return self.tools if spec.images else (*self.tools, "scikit-image")

    def run(self, spec: ParitySpec, ctx: StageContext) -> dict[str, Any]:
        artifact, source = ctx.inputs
        reference = TorchReference(source, ctx.recipe_dir)
        candidate = open_candidate(artifact)
        images = load_images(ctx.resolve(spec.images) if spec.images else None, spec.max_images)
        groups = {
            "images": _on_images(reference, candidate, images),
            "random": _on_random(reference, candidate, spec),
        }
        kind = _kind(spec, candidate)
        gates = gates_for(
            kind, spec.thresholds, trained=reference.weights in ("pretrained", "checkpoint")
        )
        metrics = {
            g: _compare(ref, cand, candidate.postprocess, candidate.output_names)
            for g, (ref, cand) in groups.items()
            if ref
        }
        gated = GATED_INPUTS.get(kind, ("images", "random"))
        if not any(g in metrics for g in gated):
            raise StageError(
                f"nothing to gate: a {kind} artifact is judged on {' and '.join(gated)}, and "
                f"max_images: {spec.max_images}, random_inputs: {spec.random_inputs} gave none"
            )
        failed = [
            f"{g}/{o}: {b}"
            for g, outs in metrics.items()
            if g in gated
            for o, m in outs.items()
            for b in breaches(m, gates)
        ]
        report = {
            "kind": kind,
            "weights": reference.weights,
            "thresholds": gates,
            "metrics": metrics,
            "passed": not failed,
            "breaches": failed,
        }
        table = metric_table(metrics)
        (ctx.out_dir / "parity.json").write_text(json.dumps(report, indent=2, sort_keys=True))
        (ctx.out_dir / "parity.md").write_text(table + "\n")
        ctx.log.info("parity (%s thresholds):\n%s", kind, table)
        if failed:
            raise StageError("parity gate failed: " + "; ".join(failed) + "\n" + table)
        # the checked artifact by content, so a benchmark report can show this verdict beside it
        return {
            "passed": True,
            "kind": kind,
            "metrics": metrics,
            "artifact_digest": artifact.digest,
        }


def _on_images(reference, candidate, images) -> tuple[list, list]:
    pairs = [run_on_image(reference, candidate, image) for _name, image in images]
    return [ref for ref, _ in pairs], [cand for _, cand in pairs]


def _on_random(reference, candidate, spec: ParitySpec) -> tuple[list, list]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(spec.seed)
    ref_out, cand_out = [], []
    for _ in range(spec.random_inputs):
        if candidate.composed:  # random photos-sized noise through both preprocessings
            size = (int(rng.integers(200, 400)), int(rng.integers(200, 400)), 3)
            noise = Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8))
            ref, cand = run_on_image(reference, candidate, noise)
        else:
            shape = (1, *reference.data_config["input_size"])
            tensor = rng.standard_normal(shape).astype(np.float32)
            ref, cand = reference.forward(tensor), candidate.forward(tensor)
        ref_out.append(ref)
        cand_out.append(cand)
    return ref_out, cand_out


def _compare(
    ref_runs: list, cand_runs: list, postprocess: str, names: list[str]
) -> dict[str, dict[str, float]]:
    """Per output: metrics over all samples. Post-processed artifacts compare like for like."""
    import numpy as np

    ref_logits = np.concatenate([run[0] for run in ref_runs])
    if postprocess == "softmax":
        return {
            "probabilities": agreement(
                softmax(ref_logits), np.concatenate([run[0] for run in cand_runs])
            )
        }
    if postprocess == "topk":
        # the artifact's top-k probabilities written into torch's: they differ only where wrong
        scores = np.concatenate([run[0] for run in cand_runs])
        indices = np.concatenate([run[1] for run in cand_runs]).astype(np.int64)
        probs = softmax(ref_logits)
        filled = probs.copy()
        np.put_along_axis(filled, indices, scores, axis=1)
        return {"topk": agreement(probs, filled)}
    outputs = {}
    for index in range(len(ref_runs[0])):
        ref = np.concatenate([run[index] for run in ref_runs])
        cand = np.concatenate([run[index] for run in cand_runs])
        outputs[names[index] if index < len(names) else f"output{index}"] = agreement(ref, cand)
    return outputs


def _kind(spec: ParitySpec, candidate) -> str:
    if spec.kind != "auto":
        return spec.kind
    if candidate.precision in ("int8", "fp16"):
        # reduced precision with baked-in preprocessing: both sources of error apply
        return f"composed+{candidate.precision}" if candidate.composed else candidate.precision
    return "composed" if candidate.composed else "fp32"
