"""What every stage shares: the spec base models, artifacts, the stage base class, the registry.

A stage type is one module in ``edgepipe/stages``: a Pydantic spec (the recipe fields, each with a
description) and a :class:`Stage` subclass decorated with :func:`register_stage`. Heavy libraries
(torch, onnx, runtimes) are imported only inside ``run()``/``preflight()`` so that planning and
fully cached runs stay fast.
"""

from __future__ import annotations

__all__ = [
    "Artifact",
    "ArtifactKind",
    "FieldError",
    "Resources",
    "MultiInputSpec",
    "SingleInputSpec",
    "Stage",
    "VerificationSpec",
    "VerificationStage",
    "StageContext",
    "StageSpec",
    "get_stage",
    "missing_modules",
    "register_stage",
    "registered_stages",
]

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.env import missing_modules
from edgepipe.strict_fields import FieldError, StrictScalars
from edgepipe.toolchains.declared import Toolchain, declared_toolchain


class Resources(BaseModel):
    """Scheduling hints for ``edgepipe run --jobs N`` and ``--executor ray``; they never change
    a stage's output, so they are not in its key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: bool = Field(
        default=False, description=("Needs the GPU: never runs beside another GPU stage.")
    )
    memory_gb: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Expected peak memory; running stages together must fit in the machine's memory."
        ),
    )
    node: dict[Annotated[str, Field(min_length=1, max_length=63)], str] = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "--executor ray: run only on a node with these labels (`ray start --labels "
            "gpu_model=A10G`), e.g. {gpu_model: A10G} for a TensorRT build; a label no node "
            "has fails the run before any stage. Ignored by local runs."
        ),
    )
    custom: dict[
        Annotated[str, Field(min_length=1, max_length=63)],
        Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)],
    ] = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "--executor ray: custom resources the stage holds while it runs (`ray start "
            "--resources '{\"bench_box\": 1}'`), e.g. {bench_box: 1}. Ignored by local runs."
        ),
    )


class StageSpec(StrictScalars):
    """Fields common to every stage spec; ``true`` is not 1 and ``"3"`` is not 3 (see
    :mod:`edgepipe.strict_fields`), in nested settings too."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)

    input_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that name upstream stages (a stage id, or a list of them)."""
    key_when_set: ClassVar[tuple[str, ...]] = ()
    """Fields added to a stage type after its keys were committed: they enter the action key
    only when they differ from their default, so adding one changes no existing key (or lock)."""

    type: str = Field(description="Stage type; selects which fields are allowed.")
    resources: Resources = Field(
        default_factory=Resources,
        description=(
            "Scheduling hints for --jobs (GPU use, expected memory); not part of the cache key."
        ),
    )

    def input_slots(self) -> list[tuple[str, int | None, str]]:
        """(field, list index or None, upstream id) for every upstream reference, in order."""
        slots = []
        for name in self.input_fields:
            value = getattr(self, name)
            if isinstance(value, list):
                slots += [(name, index, item) for index, item in enumerate(value)]
            elif value is not None:
                slots.append((name, None, value))
        return slots

    def input_ids(self) -> list[str]:
        """Upstream stage ids, in order; these are the DAG's edges."""
        return [upstream for _, _, upstream in self.input_slots()]

    def file_fields(self) -> dict[str, Path]:
        """Recipe-relative files this spec reads; their *content* goes into the cache key."""
        return {}

    def dir_fields(self) -> dict[str, Path]:
        """Recipe-relative folders this spec reads; their content goes into the cache key."""
        return {}


class SingleInputSpec(StageSpec):
    """A stage with exactly one upstream stage."""

    input_fields = ("input",)

    input: str = Field(description="Id of the upstream stage whose artifact this stage consumes.")


class MultiInputSpec(StageSpec):
    """A stage with one or more upstream stages."""

    input_fields = ("inputs",)

    inputs: list[str] = Field(
        min_length=1, description="Ids of the upstream stages whose artifacts this stage consumes."
    )


@dataclass
class StageContext:
    """Everything a stage may touch while it runs."""

    stage_id: str
    recipe_dir: Path
    inputs: list[Artifact]
    out_dir: Path
    log: logging.Logger
    recorded: dict[str, Any] | None = None
    """What the lockfile recorded for this stage under the same action key (e.g. the
    quantization settings a recovery search chose), so a rebuild can reproduce it."""
    toolchain_python: Path | None = None
    """The interpreter of the stage's built toolchain (``Stage.toolchain``), if it has one."""

    def resolve(self, relative: Path) -> Path:
        """A recipe path, relative to the recipe file."""
        return (self.recipe_dir / relative).resolve()


class Stage(ABC):
    """Base class: owns the shared work; a subclass implements its spec and ``run``."""

    type: ClassVar[str]
    spec_class: ClassVar[type[StageSpec]]
    version: ClassVar[int] = 1
    """Bump when the implementation changes what it produces: it is part of the cache key."""
    tools: ClassVar[tuple[str, ...]] = ()
    """Python distributions whose versions go into the cache key and must be installed."""
    input_kinds: ClassVar[tuple[ArtifactKind, ...]] = ()
    output: ClassVar[ArtifactKind]
    uses_gpu: ClassVar[bool] = False
    """Always needs the GPU (e.g. a TensorRT build), whatever the spec's resources say."""
    measures_time: ClassVar[bool] = False
    """Times things (a benchmark): on a cluster it holds a whole node while it runs."""
    summary: ClassVar[str] = ""
    toolchain: ClassVar[str | None] = None
    """Name of the isolated toolchain its work runs in (edgepipe.toolchains), if any; the spec's
    ``toolchain`` field, when it has one, overrides its Python or pins."""

    def toolchain_for(self, spec: StageSpec) -> Toolchain | None:
        """The toolchain this spec's work runs in (declared, with the recipe's override)."""
        if self.toolchain is None:
            return None
        declared = declared_toolchain(self.toolchain)
        override = getattr(spec, "toolchain", None)
        return override.apply(declared) if override is not None else declared

    def output_kind(self, spec: StageSpec) -> ArtifactKind:
        return self.output

    def accepted_kinds(self, field: str, spec: StageSpec | None = None) -> tuple[ArtifactKind, ...]:
        """Artifact kinds the upstream named by ``field`` may produce (empty: any)."""
        return self.input_kinds

    def tools_for(self, spec: StageSpec) -> tuple[str, ...]:
        return self.tools

    def key_extra(self, spec: StageSpec) -> dict[str, Any]:
        """More facts that change the result (e.g. the machine for a benchmark); default none."""
        return {}

    def key_files(self, spec: StageSpec, recipe_dir: Path) -> dict[str, Path]:
        """Files and folders whose content goes into the cache key, by name."""
        paths = {**spec.file_fields(), **spec.dir_fields()}
        return {name: recipe_dir / rel for name, rel in paths.items()}

    def preflight(self, spec: StageSpec, recipe_dir: Path) -> list[str]:
        """Problems that would make ``run`` fail, found before anything runs. Default: imports."""
        missing = missing_modules(self.tools_for(spec))
        if not missing:
            return []
        return [
            f"needs the Python package(s) {', '.join(missing)}: pip install {' '.join(missing)}"
        ]

    @abstractmethod
    def run(self, spec: StageSpec, ctx: StageContext) -> dict[str, Any]:
        """Write the artifact into ``ctx.out_dir``; return its metadata (deterministic, JSON)."""

    # What a stage's output says to people. ``files`` maps a built output's relative paths to
    # where they can be read (the output folder, or the cache's objects).
    reports: ClassVar[bool] = False
    """Whether ``edgepipe report`` lists this stage (a verdict or a measurement)."""

    not_reproducible: ClassVar[str | None] = None
    """Why a rebuild does not give the same output bytes (a benchmark's timings), if it does
    not: the lockfile then records no digest for it."""

    def not_reproducible_for(self, spec: StageSpec) -> str | None:
        """:attr:`not_reproducible` for this spec (a back end may decide it)."""
        return self.not_reproducible

    def headline(self, files: dict[str, Path]) -> dict[str, Any]:
        """What a reviewer wants to see change in a PR diff, and a rebuild reproduces: verdicts
        and choices, never measured numbers (those are :meth:`measurements`). In the lock."""
        return {}

    def measurements(self, files: dict[str, Path]) -> dict[str, Any]:
        """Measured numbers (timings, metrics that vary in their last digits with the CPU):
        the recipe's metrics file, which ``edgepipe metrics diff`` compares."""
        return {}

    def report_row(self, stage_id: str, files: dict[str, Path]) -> str | None:
        """A row of ``edgepipe report``'s checks table: | check | type | result | detail |."""
        return None

    def report_section(self, stage_id: str, files: dict[str, Path]) -> str | None:
        """A Markdown section of ``edgepipe report`` after the checks table (e.g. a table)."""
        return None


class VerificationSpec(StageSpec):
    """Fields every stage that checks an artifact against its torch model has."""

    input_fields: ClassVar[tuple[str, ...]] = ("input", "reference")

    input: str = Field(description="Id of the stage whose artifact is checked.")
    reference: str | None = Field(
        default=None,
        description="Id of the torch-model stage to compare with; default: the nearest "
        "torch-model ancestor of `input` (its load or reparameterize stage).",
    )


class VerificationStage(Stage):
    """A stage whose input is any runnable artifact and whose reference is a torch model."""

    output = ArtifactKind.REPORT
    tools = ("torch", "timm", "onnxruntime", "numpy", "pillow")
    # rounding cannot fix that: fp32 errors are float noise, INT8 kernels differ by ISA
    not_reproducible = (
        "measured floats vary in their last digits with the CPU and thread count: "
        "the verdict is recorded, the numbers are in metrics.json"
    )

    def accepted_kinds(self, field: str, spec: StageSpec | None = None) -> tuple[ArtifactKind, ...]:
        if field == "reference":
            return (ArtifactKind.TORCH_MODEL,)
        from edgepipe.runtimes import runnable_kinds

        # any artifact a runtime opens, but the reference's own kind: that is the reference
        return tuple(kind for kind in runnable_kinds() if kind != ArtifactKind.TORCH_MODEL)


_REGISTRY: dict[str, Stage] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage type available to recipes."""
    if cls.type in _REGISTRY:
        raise ValueError(f"stage type {cls.type!r} registered twice")
    _REGISTRY[cls.type] = cls()
    return cls


def get_stage(stage_type: str) -> Stage:
    return _REGISTRY[stage_type]


def registered_stages() -> dict[str, Stage]:
    return dict(_REGISTRY)
