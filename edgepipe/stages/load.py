"""``load``: bring a model into the pipeline (timm or torchvision name, ``module:callable``
factory, ONNX file), and say what task it does."""

from __future__ import annotations

__all__ = ["LoadSpec", "LoadStage"]

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from edgepipe.errors import StageError
from edgepipe.models import checkpoints, pretrained, torchvision_models
from edgepipe.models.data_config_override import DataConfigOverride
from edgepipe.models.module_sources import module_source_files
from edgepipe.models.onnx_io import external_data_files, import_onnx
from edgepipe.models.package_files import is_package_reference, package_file
from edgepipe.models.torch_model import data_config_of, import_callable, save_torch_model
from edgepipe.spec_bounds import MAX_CLASSES
from edgepipe.stages.base import (
    ArtifactKind,
    FieldError,
    Stage,
    StageContext,
    StageSpec,
    register_stage,
)
from edgepipe.tasks.options import CtcSpec

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_NAMED = {"name", "pretrained", "weights", "strict", "match_by", "model_kwargs", "num_classes"}
_SOURCE_FIELDS = {
    "timm": {*_NAMED, "seed", "data_config"},
    "torchvision": {*_NAMED, "seed", "data_config"},
    "callable": {"factory", "weights", "strict", "match_by", "model_kwargs", "seed", "data_config"},
    "onnx": {"path", "data_config"},
}


class LoadSpec(StageSpec):
    """Load a model: from timm, from your own factory function, or an existing ONNX file."""

    type: Literal["load"] = Field(description="Stage type.")
    key_when_set: ClassVar[tuple[str, ...]] = ("task", "ctc")

    source: Literal["timm", "torchvision", "callable", "onnx"] = Field(
        default="timm", description="Where the model comes from."
    )
    task: Literal["classification", "detection", "segmentation", "sequence"] | None = Field(
        default=None,
        description="What the model does; it picks verification metrics. Default: inferred "
        "(torchvision: from the model's package; otherwise classification).",
    )
    ctc: CtcSpec | None = Field(
        default=None,
        description="A CTC text recogniser's alphabet, blank and output layout: verification "
        "decodes its outputs to strings. Implies task: sequence.",
    )
    name: str | None = Field(
        default=None,
        description="timm model name, optionally with a pretrained tag "
        "(e.g. 'resnet50.a1_in1k'), or torchvision model name (torchvision.models.list_models(), "
        "e.g. 'lraspp_mobilenet_v3_large'). source: timm or torchvision.",
    )
    pretrained: bool = Field(
        default=False,
        description="Use the pretrained weights: timm's (network or a populated Hugging Face "
        "cache) or torchvision's DEFAULT (in torch's hub cache). source: timm or torchvision.",
    )
    weights: Path | None = Field(
        default=None,
        description="Local checkpoint (.safetensors, .pth, .pt, .bin) loaded into "
        "the model, relative to the recipe, or a file an installed package ships: "
        "'package:<module>/<path inside it>'. Loaded with weights_only=True.",
    )
    strict: bool = Field(default=True, description="Require the checkpoint keys to match exactly.")
    match_by: Literal["name", "order"] = Field(
        default="name",
        description="How checkpoint tensors find their parameters: by name, or by position, "
        "for a checkpoint of another implementation whose names differ but whose tensors come "
        "in the model's order (every pair's shape is checked; BatchNorm counters are skipped).",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for timm.create_model or the factory."
    )
    num_classes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CLASSES,
        description=f"Classifier size (timm; at most {MAX_CLASSES}). Use with a fine-tuned "
        "checkpoint.",
    )
    factory: str | None = Field(
        default=None,
        description="'module:callable' returning an nn.Module; the module is searched in the "
        "recipe's folder first. source: callable only.",
    )
    path: Path | None = Field(
        default=None,
        description="ONNX file to bring into the graph, relative to the recipe. source: onnx only.",
    )
    data_config: DataConfigOverride = Field(
        default_factory=DataConfigOverride, description="Overrides for the model's preprocessing."
    )
    seed: int = Field(default=0, description="Seed for random initialisation (reproducible bytes).")

    @field_validator("factory")
    @classmethod
    def _factory_reference(cls, value: str | None) -> str | None:
        if value is not None and not _FACTORY.fullmatch(value):
            raise ValueError(
                f"expected 'module:callable' (e.g. 'my_models.net:build'), got {value!r}"
            )
        return value

    @field_validator("weights")
    @classmethod
    def _package_reference(cls, value: Path | None) -> Path | None:
        if value is not None and is_package_reference(value):
            package_file(value)  # raises ValueError for a malformed reference
        return value

    @model_validator(mode="after")
    def _fields_fit_source(self) -> LoadSpec:
        required = {"timm": "name", "torchvision": "name", "callable": "factory", "onnx": "path"}[
            self.source
        ]
        if getattr(self, required) is None:
            raise FieldError(required, f"required when source is '{self.source}'")
        other_sources = set().union(*_SOURCE_FIELDS.values()) - _SOURCE_FIELDS[self.source]
        for field_name in sorted(other_sources & self.model_fields_set):
            raise FieldError(field_name, f"does not apply to source '{self.source}'")
        if self.pretrained and self.weights is not None:
            raise FieldError("weights", "set either 'pretrained: true' or 'weights', not both")
        if self.ctc is not None and self.task not in (None, "sequence"):
            raise FieldError("ctc", f"describes a sequence model, not a {self.task} one")
        if self.task == "sequence" and self.ctc is None:
            raise FieldError("ctc", "required with task: sequence (alphabet, blank, layout)")
        if "match_by" in self.model_fields_set and self.weights is None:
            raise FieldError("match_by", "applies only with 'weights'")
        return self

    def file_fields(self) -> dict[str, Path]:
        files = {k: v for k, v in (("weights", self.weights), ("path", self.path)) if v is not None}
        if self.weights is not None and is_package_reference(self.weights):
            # an absolute path: joined to the recipe's folder it stays itself
            files["weights"] = package_file(self.weights) or self.weights
        return files


@register_stage
class LoadStage(Stage):
    type = "load"
    spec_class = LoadSpec
    summary = "Load a timm model, a module:callable factory, or an ONNX file."

    def output_kind(self, spec: LoadSpec) -> ArtifactKind:
        return ArtifactKind.ONNX_MODEL if spec.source == "onnx" else ArtifactKind.TORCH_MODEL

    def tools_for(self, spec: LoadSpec) -> tuple[str, ...]:
        return {
            "timm": ("torch", "timm", "safetensors"),
            "torchvision": ("torch", "torchvision", "timm", "safetensors"),
            "callable": ("torch", "timm", "safetensors"),
            "onnx": ("onnx",),
        }[spec.source]

    def key_files(self, spec: LoadSpec, recipe_dir: Path) -> dict[str, Path]:
        files = super().key_files(spec, recipe_dir)
        if spec.source == "callable":
            module = spec.factory.partition(":")[0]
            for index, source in enumerate(module_source_files(module, recipe_dir)):
                files[f"factory_source_{index}"] = source
        if spec.source == "onnx":  # its external weights, found by name: no onnx import here
            for data in external_data_files(recipe_dir / spec.path):
                files[f"external_data:{data.name}"] = data
        return files

    def preflight(self, spec: LoadSpec, recipe_dir: Path) -> list[str]:
        problems = super().preflight(spec, recipe_dir)
        if problems or spec.source not in ("timm", "torchvision"):
            return problems
        if spec.source == "timm":
            return pretrained.problems(spec.name, spec.pretrained)
        problems = torchvision_models.known_problems(spec.name)
        if not problems and spec.pretrained:
            problems = torchvision_models.pretrained_problems(spec.name)
        return problems

    def run(self, spec: LoadSpec, ctx: StageContext) -> dict[str, Any]:
        if spec.source == "onnx":
            meta = import_onnx(ctx.resolve(spec.path), ctx.out_dir)
            overrides = spec.data_config.model_dump(mode="json", exclude_none=True)
            return {**meta, "data_config": overrides or None, **_task_meta(spec)}
        import torch

        torch.manual_seed(spec.seed)
        kwargs = dict(spec.model_kwargs)
        if spec.source == "timm":
            import timm

            if spec.num_classes is not None:
                kwargs["num_classes"] = spec.num_classes
            module = timm.create_model(spec.name, pretrained=spec.pretrained, **kwargs)
            builder = {"source": "timm", "name": spec.name, "kwargs": kwargs}
        elif spec.source == "torchvision":
            module, kwargs = torchvision_models.build(
                spec.name, spec.pretrained, spec.num_classes, kwargs
            )
            builder = {"source": "torchvision", "name": spec.name, "kwargs": kwargs}
        else:
            module = import_callable(spec.factory, ctx.recipe_dir)(**kwargs)
            if not isinstance(module, torch.nn.Module):
                raise StageError(
                    f"factory '{spec.factory}' returned {type(module).__name__}, "
                    "not a torch.nn.Module"
                )
            builder = {"source": "callable", "factory": spec.factory, "kwargs": kwargs}
        if spec.weights is not None:
            weights = ctx.resolve(spec.file_fields()["weights"])
            checkpoints.load_into(module, weights, spec.strict, spec.match_by)
        module.eval()
        save_torch_model(module, builder, ctx.out_dir)
        overrides = spec.data_config.model_dump(mode="json")
        if spec.source == "torchvision":  # what its weights declare, under the recipe's own
            declared = torchvision_models.data_config_overrides(spec.name, module)
            overrides = {**declared, **{k: v for k, v in overrides.items() if v is not None}}
        if (
            spec.source == "callable"
            and not hasattr(module, "pretrained_cfg")
            and not any(v is not None for v in overrides.values())
        ):
            ctx.log.warning(
                "factory model has no pretrained_cfg and no data_config is set: "
                "assuming timm's ImageNet defaults (3x224x224)"
            )
        params = sum(p.numel() for p in module.parameters())
        ctx.log.info("loaded %s: %s parameters", type(module).__name__, f"{params:,}")
        meta = {
            "architecture": f"{type(module).__module__}.{type(module).__qualname__}",
            "parameters": params,
            "data_config": data_config_of(module, overrides),
            "weights": _weights_origin(spec),
        }
        return {**meta, **_task_meta(spec)}


def _task_meta(spec: LoadSpec) -> dict[str, Any]:
    """What the model does and how its outputs decode, for verification downstream. Absent for
    classifiers, which every reader defaults to: their artifacts' digests stay put."""
    task = spec.task or _inferred_task(spec)
    meta: dict[str, Any] = {} if task == "classification" else {"task": task}
    if spec.ctc is not None:
        meta["ctc"] = spec.ctc.model_dump(mode="json")
    return meta


def _weights_origin(spec: LoadSpec) -> str:
    """Where the weights came from; verification gates class agreement only for trained ones."""
    if spec.weights is not None:
        return "checkpoint"
    if spec.pretrained:
        return "pretrained"
    return "random" if spec.source in ("timm", "torchvision") else "unknown"


def _inferred_task(spec: LoadSpec) -> str:
    if spec.ctc is not None:
        return "sequence"
    if spec.source == "torchvision":
        return torchvision_models.task_of(spec.name)
    return "classification"
