"""``reparameterize``: fold training-time structure (RepVGG branches, BatchNorm) into layers.

The output is a torch-model whose builder lists the transforms that changed something, so
``rebuild`` replays them on a fresh module before loading the fused weights. The stage checks the
fused model against the original on a seeded random input and fails if they disagree.
"""

from __future__ import annotations

__all__ = ["ReparameterizeSpec", "ReparameterizeStage"]

import json
import shutil
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.models import transforms
from edgepipe.models.torch_model import BUILDER_FILE, WEIGHTS_FILE, rebuild, save_torch_model
from edgepipe.stages.base import ArtifactKind, SingleInputSpec, Stage, StageContext, register_stage

_METHODS = {
    "auto": ("timm-reparameterize", "fuse-conv-bn"),
    "timm": ("timm-reparameterize",),
    "fuse-conv-bn": ("fuse-conv-bn",),
    "none": (),
}
_CHECK_BATCH = 2
_CHECK_SEED = 0


class ReparameterizeSpec(SingleInputSpec):
    """Fuse a torch model for inference: multi-branch blocks and Conv2d + BatchNorm2d pairs."""

    type: Literal["reparameterize"] = Field(description="Stage type.")
    method: Literal["auto", "timm", "fuse-conv-bn", "none"] = Field(
        default="auto",
        description="'timm': timm's reparameterize_model (RepVGG, MobileOne, FastViT, RepGhost, "
        "LeViT… blocks); 'fuse-conv-bn': fold each BatchNorm2d into the Conv2d that alone feeds "
        "it; 'auto': timm, then fuse-conv-bn for what remains; 'none': pass the model through.",
    )
    tolerance: float = Field(
        default=1e-3,
        gt=0,
        description="Largest allowed difference between the fused and the original model's "
        "outputs on a seeded random input, relative to the largest original output magnitude.",
    )


@register_stage
class ReparameterizeStage(Stage):
    type = "reparameterize"
    spec_class = ReparameterizeSpec
    version = 1
    tools = ("torch", "timm", "safetensors")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.TORCH_MODEL
    summary = "Fuse re-parameterizable blocks and Conv+BatchNorm pairs for inference (verified)."

    def run(self, spec: ReparameterizeSpec, ctx: StageContext) -> dict[str, Any]:
        source = ctx.inputs[0]
        builder = json.loads((source.path / BUILDER_FILE).read_text())
        module = rebuild(source.path, ctx.recipe_dir)
        before = _census(module)
        example = _example(source.meta["data_config"]["input_size"])
        reference = _outputs(module, example)
        module, changed = _transform(module, _METHODS[spec.method])
        after = _census(module)
        _log_census(ctx, "before", before)
        _log_census(ctx, "after", after)
        if changed:
            _check(reference, _outputs(module, example), spec.tolerance, ctx)
            builder["transforms"] = [*builder.get("transforms", []), *changed]
            save_torch_model(module, builder, ctx.out_dir)
        else:
            ctx.log.info("nothing to reparameterize: the model passes through unchanged")
            # the same bytes as the input keep the artifact's digest, so downstream stays cached
            for name in (BUILDER_FILE, WEIGHTS_FILE):
                shutil.copyfile(source.path / name, ctx.out_dir / name)
        return {
            **source.meta,
            "reparameterized": changed,
            "parameters": after["parameters"],
            "parameters_before": before["parameters"],
            "modules_before": before["modules"],
            "modules_after": after["modules"],
        }


def _transform(module: Any, names: tuple[str, ...]) -> tuple[Any, list[str]]:
    """Apply ``names`` in order; also return those that changed the module's structure."""
    changed = []
    for name in names:
        shape = transforms.structure(module)
        module = transforms.apply(module, name)
        if transforms.structure(module) != shape:
            changed.append(name)
    return module.eval(), changed


def _census(module: Any) -> dict[str, Any]:
    """Parameter count and, by type, the modules that hold parameters themselves."""
    holders = Counter(
        type(m).__name__ for m in module.modules() if any(True for _ in m.parameters(recurse=False))
    )
    return {
        "parameters": sum(p.numel() for p in module.parameters()),
        "modules": dict(sorted(holders.items())),
    }


def _log_census(ctx: StageContext, when: str, census: dict[str, Any]) -> None:
    layers = ", ".join(f"{name} {count}" for name, count in census["modules"].items())
    ctx.log.info("%s: %s parameters; %s", when, f"{census['parameters']:,}", layers or "no layers")


def _example(input_size: list[int]) -> Any:
    import torch

    generator = torch.Generator().manual_seed(_CHECK_SEED)
    return torch.randn(_CHECK_BATCH, *input_size, generator=generator)


def _outputs(module: Any, example: Any) -> list[Any]:
    """The model's output tensors, flattened (models may return tuples, lists or dicts)."""
    import torch

    with torch.no_grad():
        result = module(example)
    leaves, pending = [], [result]
    while pending:
        item = pending.pop(0)
        if isinstance(item, dict):
            pending[:0] = list(item.values())
        elif isinstance(item, list | tuple):
            pending[:0] = list(item)
        elif isinstance(item, torch.Tensor):
            leaves.append(item.detach().float())
    return leaves


def _check(reference: list[Any], fused: list[Any], tolerance: float, ctx: StageContext) -> None:
    """Fail unless the fused model computes what the original did."""
    if len(reference) != len(fused) or any(
        r.shape != f.shape for r, f in zip(reference, fused, strict=True)
    ):
        raise StageError("the reparameterized model returns outputs of a different shape")
    pairs = zip(reference, fused, strict=True)
    worst = max(((r - f).abs().max().item() for r, f in pairs if r.numel()), default=0.0)
    scale = max((r.abs().max().item() for r in reference if r.numel()), default=0.0) or 1.0
    ctx.log.info("max abs difference after fusing: %.3g (%.3g relative)", worst, worst / scale)
    if not worst / scale <= tolerance:  # also fails on NaN
        raise StageError(
            f"the reparameterized model's outputs differ from the original's by {worst:.3g} "
            f"({worst / scale:.3g} of the largest output, tolerance {tolerance:g}): a transform "
            "changed what the model computes. Use method: fuse-conv-bn or timm to find which, "
            "or method: none to pass the model through"
        )
