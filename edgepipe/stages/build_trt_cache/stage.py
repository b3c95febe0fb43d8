"""``build-trt-cache``: TensorRT engines for an ONNX model, built on (and only for) this GPU.

``onnxruntime``: ORT's TensorRT provider runs the model at each profile's min/opt/max shape,
building the engine into ``trt_engines/`` and dumping ``model_ctx.onnx``, an EP-context model
that loads it without a builder. ``native``: TensorRT writes ``model.plan`` (for trtexec), wrapped
in the same kind of EP-context model. ``model.onnx`` stays as it came (ORT keys cached engines by
its file name). Option names: ORT's TensorRT EP page, ``tensorrt_execution_provider_info.cc``."""

from __future__ import annotations

__all__ = ["BuildTrtCacheSpec", "BuildTrtCacheStage", "derive_profile", "trt_provider_options"]

import json
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from edgepipe import gpu as _gpu
from edgepipe.errors import StageError
from edgepipe.models.onnx_io import ONNX_FILE, copy_model_files, image_axes
from edgepipe.runtimes.tensorrt import PROVIDER
from edgepipe.spec_bounds import MAX_BATCH, MAX_DIM, MAX_IMAGE_SIDE, ImageSide
from edgepipe.stages.base import (
    ArtifactKind,
    FieldError,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)
from edgepipe.stages.build_trt_cache.engines import (
    PLAN_FILE,
    TIMING_DIR,
    build_engines,
    build_native,
    check_int8,
)

ENGINE_DIR, CTX_FILE = "trt_engines", "model_ctx.onnx"
METADATA_FILE = "trt_metadata.json"
_WHICH = ("min", "opt", "max")
Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]
_DIMS = f" (at most 8 dims, each 1..{MAX_DIM})."


class ShapeRange(BaseModel):
    """One input's optimisation profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: list[Dim] = Field(max_length=8, description=f"Smallest shape the engine accepts{_DIMS}")
    opt: list[Dim] = Field(max_length=8, description=f"Shape TensorRT tunes its kernels for{_DIMS}")
    max: list[Dim] = Field(max_length=8, description=f"Largest shape the engine accepts{_DIMS}")

    @model_validator(mode="after")
    def _ordered(self) -> ShapeRange:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError("min, opt and max need the same number of dimensions")
        if any(not a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError("each dimension needs min <= opt <= max")
        return self


class BuildTrtCacheSpec(SingleInputSpec):
    """Build TensorRT engines for an ONNX model on this machine's GPU."""

    type: Literal["build-trt-cache"] = Field(description="Stage type.")
    engine: Literal["onnxruntime", "native"] = Field(
        default="onnxruntime",
        description="onnxruntime: ORT's TensorRT provider builds; native: TensorRT writes "
        "model.plan (for trtexec).",
    )
    fp16: bool = Field(default=True, description="Allow FP16 kernels (trt_fp16_enable).")
    int8: bool = Field(default=False, description="Allow INT8: needs QDQ or calibration_table.")
    calibration_table: Path | None = Field(
        default=None,
        description="ONNX Runtime calibration table (calibration.flatbuffers) for an INT8 build "
        "of a model without Q/DQ nodes; relative to the recipe.",
    )
    max_workspace_size: PositiveInt | None = Field(
        default=None, description="Builder workspace limit in bytes; default: TensorRT's."
    )
    builder_optimization_level: int = Field(
        default=3, ge=0, le=5, description="0-5: higher builds slower, may run faster; <3 is slow."
    )
    timing_cache: bool = Field(default=True, description="Keep TensorRT's timing cache too.")
    device_id: int = Field(default=0, ge=0, description="CUDA device to build on.")
    profiles: dict[str, ShapeRange] | None = Field(
        default=None,
        description="Optimisation profile per dynamic input; default: batch 1..max_batch "
        "(opt 1), dynamic height/width over hw_range (opt: the data config's size).",
    )
    max_batch: PositiveInt = Field(
        default=8,
        le=MAX_BATCH,
        description=f"Largest batch of the default profile (at most {MAX_BATCH}).",
    )
    hw_range: tuple[ImageSide, ImageSide] = Field(
        default=(64, 2048),
        description=f"[min, max] of dynamic height/width (default profile; 1..{MAX_IMAGE_SIDE}).",
    )
    ep_context: bool = Field(default=True, description="Write model_ctx.onnx (loads, no rebuild).")

    @model_validator(mode="after")
    def _consistent(self) -> BuildTrtCacheSpec:
        if self.calibration_table is not None and not self.int8:
            raise FieldError("calibration_table", "applies only with int8: true")
        if self.engine == "native" and self.calibration_table is not None:
            raise FieldError("calibration_table", "engine: native builds INT8 from QDQ models only")
        if self.engine == "native" and not self.ep_context:
            # ORT reaches a native plan only through the EP-context model; without it the
            # session would build a fresh engine of its own and test that instead
            raise FieldError("ep_context", "engine: native needs ep_context: true")
        if self.hw_range[0] > self.hw_range[1]:
            raise FieldError("hw_range", "needs min <= max")
        return self

    def file_fields(self) -> dict[str, Path]:
        return {"calibration_table": self.calibration_table} if self.calibration_table else {}


def trt_provider_options(
    spec: BuildTrtCacheSpec, cache_dir: Path, profiles: dict[str, dict] | None = None
) -> dict[str, str]:
    """TensorRT provider options building into ``cache_dir``; profiles: {input: {min|opt|max}}.
    Booleans are "True"/"False", which ORT's parse_string.h reads."""
    options = {
        "device_id": str(spec.device_id),
        "trt_fp16_enable": str(spec.fp16),
        "trt_int8_enable": str(spec.int8),
        "trt_builder_optimization_level": str(spec.builder_optimization_level),
        "trt_engine_cache_enable": "True",
        # with an EP-context dump the cache path must be relative: the EP resolves it against
        # the context model's folder and records it in the EPContext node
        "trt_engine_cache_path": ENGINE_DIR if spec.ep_context else str(cache_dir / ENGINE_DIR),
        "trt_timing_cache_enable": str(spec.timing_cache),
    }
    if spec.timing_cache:
        options["trt_timing_cache_path"] = str(cache_dir / TIMING_DIR)
    if spec.max_workspace_size:
        options["trt_max_workspace_size"] = str(spec.max_workspace_size)
    if spec.calibration_table is not None:  # a file name in the engine cache folder
        options["trt_int8_calibration_table_name"] = spec.calibration_table.name
    for which in _WHICH if profiles else ():  # "input:1x3x224x224,other:..."
        options[f"trt_profile_{which}_shapes"] = ",".join(
            f"{name}:{'x'.join(map(str, shapes[which]))}" for name, shapes in profiles.items()
        )
    if spec.ep_context:
        options["trt_dump_ep_context_model"] = "True"
        options["trt_ep_context_file_path"] = str(cache_dir / CTX_FILE)
        options["trt_ep_context_embed_mode"] = "0"  # the engine stays a file beside the model
    return options


def derive_profile(
    inputs_meta: list[dict[str, Any]],
    data_config: dict[str, Any] | None,
    max_batch: int,
    hw_range: tuple[int, int] = (64, 2048),
) -> dict[str, dict[str, list[int]]]:
    """Default min/opt/max of every input with a dynamic dimension: batch (axis 0) 1/1/max_batch;
    height/width of an image (NCHW, or NHWC if the last dim is 1/3/4) hw_range[0]/the data
    config's size/hw_range[1]. Raises StageError for any other dynamic dimension."""
    size = list((data_config or {}).get("input_size") or [3, 224, 224])[-2:]
    profiles = {}
    for value in inputs_meta:
        dims = value["shape"]
        if all(isinstance(d, int) for d in dims):
            continue
        spatial = image_axes(dims)
        triples = []
        for axis, dim in enumerate(dims):
            if isinstance(dim, int):
                triples.append((dim, dim, dim))
            elif axis == 0:
                triples.append((1, 1, max_batch))
            elif axis in spatial:
                opt = min(max(size[spatial.index(axis)], hw_range[0]), hw_range[1])
                triples.append((hw_range[0], opt, hw_range[1]))
            else:
                where = f"input '{value['name']}' dimension {axis} ('{dim}')"
                raise StageError(f"{where} is neither batch nor height/width: set `profiles`")
        profiles[value["name"]] = {w: [t[i] for t in triples] for i, w in enumerate(_WHICH)}
    return profiles


@register_stage
class BuildTrtCacheStage(Stage):
    type = "build-trt-cache"
    spec_class = BuildTrtCacheSpec
    version = 1
    tools = ("onnx", "onnxruntime-gpu", "tensorrt")
    input_kinds = (ArtifactKind.ONNX_MODEL,)
    output = ArtifactKind.ONNX_MODEL
    uses_gpu = True
    summary = "Build TensorRT engines for this GPU (engine cache, EP-context model, timing cache)."

    def tools_for(self, spec: BuildTrtCacheSpec) -> tuple[str, ...]:
        # ONNX Runtime loads libnvinfer itself; TensorRT's Python package is the native builder's
        return self.tools if spec.engine == "native" else ("onnx", "onnxruntime-gpu")

    def key_extra(self, spec: BuildTrtCacheSpec) -> dict[str, Any]:
        # an engine is valid only for the GPU, driver, CUDA and TensorRT that built it
        return {"gpu": _gpu.gpu_fingerprint(spec.device_id)}

    def preflight(self, spec: BuildTrtCacheSpec, recipe_dir: Path) -> list[str]:
        gpu = _gpu.gpu_problems(need_tensorrt=True, device_id=spec.device_id)
        return [*super().preflight(spec, recipe_dir), *gpu]

    def run(self, spec: BuildTrtCacheSpec, ctx: StageContext) -> dict[str, Any]:
        source, out = ctx.inputs[0], ctx.out_dir
        copy_model_files(source.path, out)
        (out / ENGINE_DIR).mkdir()
        if table := spec.calibration_table:  # ORT reads it from the engine cache folder
            shutil.copyfile(ctx.resolve(table), out / ENGINE_DIR / table.name)
        profiles = _profiles(spec, source.meta)
        check_int8(spec, out / ONNX_FILE)
        if spec.timing_cache:
            (out / TIMING_DIR).mkdir()
        if spec.engine == "native":
            build_native(spec, out, profiles, source.meta)
        else:
            options = trt_provider_options(spec, out, profiles)
            build_engines(out / ONNX_FILE, options, profiles, ctx.log)
        if spec.ep_context and not (out / CTX_FILE).is_file():
            ctx.log.warning("ONNX Runtime wrote no EP-context model; the engine cache remains")
        runtime = spec.model_copy(update={"ep_context": False, "timing_cache": False})
        trt = {
            "engine": spec.engine,
            "device_id": spec.device_id,
            "profiles": profiles,
            "engine_cache": ENGINE_DIR,
            "timing_cache": TIMING_DIR if spec.timing_cache else None,
            "ep_context_model": CTX_FILE if (out / CTX_FILE).is_file() else None,
            "plan": PLAN_FILE if spec.engine == "native" else None,
            "runtime_options": trt_provider_options(runtime, Path("."), profiles),
            "gpu": _gpu.gpu_fingerprint(spec.device_id),
            "onnxruntime": _gpu.onnxruntime_build()["version"],
        }
        precision = "int8" if spec.int8 else "fp16" if spec.fp16 else "fp32"
        report = json.dumps({"precision": precision, **trt}, indent=2, sort_keys=True)
        (out / METADATA_FILE).write_text(report + "\n")
        return {**source.meta, "precision": precision, "execution_provider": PROVIDER, "trt": trt}


def _profiles(spec: BuildTrtCacheSpec, meta: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    inputs = {value["name"]: value["shape"] for value in meta.get("inputs", [])}
    if any(c in name for name in inputs for c in ",:"):
        raise StageError("input names with ',' or ':' cannot be written as TensorRT profiles")
    if spec.profiles is None:
        config = meta.get("data_config")
        return derive_profile(meta["inputs"], config, spec.max_batch, spec.hw_range)
    profiles = {name: shapes.model_dump() for name, shapes in spec.profiles.items()}
    if unknown := sorted(set(profiles) - set(inputs)):
        raise StageError(f"profiles name {unknown}, not inputs of the model ({list(inputs)})")
    dynamic = [n for n, dims in inputs.items() if not all(isinstance(d, int) for d in dims)]
    if missing := [n for n in dynamic if n not in profiles]:
        raise StageError(f"profiles must cover every dynamic input; missing: {', '.join(missing)}")
    return profiles
