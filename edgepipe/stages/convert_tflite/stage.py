"""``convert-tflite``: ONNX → ``model.tflite`` (LiteRT) with onnx2tf, in its own toolchain.

onnx2tf pins onnx, onnxruntime and onnxsim versions that conflict with edgepipe's, and needs
Python 3.12: it runs in the ``onnx2tf`` toolchain (edgepipe.toolchains) as a subprocess.
edgepipe's side prepares the ONNX file (onnx_prep) and the calibration samples — the same
real-image samples, through the model's own preprocessing, as the other quantizers — and reads
the ``.tflite`` back with LiteRT's interpreter before the stage succeeds.

The TFLite model takes NHWC (onnx2tf's natural layout); the artifact records it, and
runtimes/tflite.py transposes the NCHW tensors verification feeds.
"""

from __future__ import annotations

__all__ = ["ConvertTfliteSpec", "ConvertTfliteStage"]

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgepipe.errors import StageError
from edgepipe.models.onnx_io import ONNX_FILE
from edgepipe.runtimes.tflite import TFLITE_FILE, describe_tflite
from edgepipe.stages.base import (
    ArtifactKind,
    SingleInputSpec,
    Stage,
    StageContext,
    missing_modules,
    register_stage,
)
from edgepipe.stages.convert_tflite.onnx_prep import prepare_for_onnx2tf
from edgepipe.stages.quantize.calibration import (
    CalibrationSpec,
    calibration_problems,
    calibration_samples,
    describe_calibration,
)
from edgepipe.toolchains import ToolchainOverride, run_worker

# facts about the input's ONNX file that would be wrong about the .tflite
_ONNX_FILE_FACTS = ("opset", "external_data", "nodes_before", "nodes_after", "model_file")


class ConvertTfliteSpec(SingleInputSpec):
    """Convert an ONNX model to TFLite (LiteRT) with onnx2tf: float32, float16 or INT8."""

    type: Literal["convert-tflite"] = Field(description="Stage type.")
    precision: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32",
        description=(
            "fp32; fp16 (float16 weights, half the size; parity uses fp16 gates); int8 "
            "(full-integer post-training quantization, calibrated on real images)."
        ),
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec,
        description="int8: calibration images, as for `quantize` (the same samples).",
    )
    quant_type: Literal["per-channel", "per-tensor"] = Field(
        default="per-channel", description="int8: weight scales per output channel or per tensor."
    )
    integer_io: bool = Field(
        default=True,
        description=(
            "int8: int8 inputs and outputs too (what integer-only accelerators and "
            "microcontrollers need; the runtime quantizes and dequantizes at the edges). "
            "false: float32 inputs and outputs around the int8 graph."
        ),
    )
    toolchain: ToolchainOverride | None = Field(
        default=None,
        description=(
            "Change the onnx2tf toolchain: another Python or another complete pinned "
            "requirement set (e.g. a newer onnx2tf). Default: the one edgepipe ships."
        ),
    )

    def dir_fields(self) -> dict[str, Path]:
        images = self.calibration.images
        return {"calibration": images} if images and self.precision == "int8" else {}


@register_stage
class ConvertTfliteStage(Stage):
    """ONNX → .tflite in the onnx2tf toolchain; read back with LiteRT before it succeeds."""

    type = "convert-tflite"
    spec_class = ConvertTfliteSpec
    version = 1
    toolchain = "onnx2tf"
    tools = ("onnx", "numpy", "ai-edge-litert")
    input_kinds = (ArtifactKind.ONNX_MODEL,)
    output = ArtifactKind.TFLITE_MODEL
    summary = "Convert an ONNX model to TFLite (LiteRT) fp32/fp16/INT8 with onnx2tf (own env)."

    def tools_for(self, spec: ConvertTfliteSpec) -> tuple[str, ...]:
        # int8 calibration samples go through the model's own (timm) preprocessing
        return self.tools + (("torch", "timm", "pillow") if spec.precision == "int8" else ())

    def preflight(self, spec: ConvertTfliteSpec, recipe_dir: Path) -> list[str]:
        problems = []
        if missing_modules(("ai-edge-litert",)):
            problems.append(
                "needs the Python package ai-edge-litert (LiteRT's interpreter, which reads the "
                "model back and runs it): pip install 'edgepipe[tflite]'"
            )
        if spec.precision == "int8":
            problems += calibration_problems(spec.calibration, recipe_dir)
        return problems

    def run(self, spec: ConvertTfliteSpec, ctx: StageContext) -> dict[str, Any]:
        source = ctx.inputs[0]
        if ctx.toolchain_python is None:
            raise StageError("the onnx2tf toolchain was not built (run it through `edgepipe run`)")
        _check_source(source.meta, spec)
        layout = _input_layout(source.meta)
        with tempfile.TemporaryDirectory(dir=ctx.out_dir.parent) as scratch:
            work = Path(scratch)
            rewrites = prepare_for_onnx2tf(source.path / ONNX_FILE, work / ONNX_FILE)
            for line in rewrites:
                ctx.log.info("rewrote for onnx2tf: %s", line)
            request = _request(spec, source.meta, work, layout, ctx)
            result = run_worker(ctx.toolchain_python, "onnx2tf_convert", request, work, ctx.log)
            shutil.move(result["file"], ctx.out_dir / TFLITE_FILE)
        described = describe_tflite(ctx.out_dir / TFLITE_FILE)  # reading it back checks it loads
        meta = _meta(source.meta, described, spec, layout, rewrites, result)
        if spec.precision == "int8":
            meta["calibration"] = describe_calibration(spec.calibration, ctx.recipe_dir)
        ctx.log.info(
            "TFLite %s: inputs %s, outputs %s",
            spec.precision,
            ", ".join(f"{i['name']}{i['shape']} {i['dtype']}" for i in described["inputs"]),
            ", ".join(f"{o['name']}{o['shape']} {o['dtype']}" for o in described["outputs"]),
        )
        return meta


def _check_source(meta: dict[str, Any], spec: ConvertTfliteSpec) -> None:
    carried = meta.get("precision", "fp32")
    if carried != "fp32":
        raise StageError(
            f"convert-tflite takes a float32 ONNX model; this one is {carried}. Convert the "
            "float model and set precision: int8 or fp16 here instead"
        )
    if len(meta.get("inputs", [])) != 1:
        raise StageError("convert-tflite converts models with one input (an image batch)")
    if spec.precision == "int8" and meta.get("preprocessing"):
        raise StageError(
            "precision: int8 cannot take a composed model (raw uint8 frames in): onnx2tf's "
            "full-integer quantization calibrates float32 inputs only. Convert the plain export "
            "to int8 and resize/normalize on the device, or use fp32/fp16 for the composed model"
        )


def _input_layout(meta: dict[str, Any]) -> str:
    """The layout the ONNX model takes: a composed model's own, else NCHW (timm, export)."""
    pre = meta.get("preprocessing")
    return pre.get("layout", "NHWC") if pre else "NCHW"


def _request(
    spec: ConvertTfliteSpec, meta: dict[str, Any], work: Path, layout: str, ctx: StageContext
) -> dict[str, Any]:
    name = meta["inputs"][0]["name"]
    request: dict[str, Any] = {
        "onnx": str(work / ONNX_FILE),
        "out": str(work / "tflite"),
        "precision": spec.precision,
        "integer_io": spec.integer_io,
        "quant_type": spec.quant_type,
        # an NHWC input is left as it is; onnx2tf transposes an NCHW one to NHWC
        "keep_shape": [name] if layout == "NHWC" else [],
    }
    if spec.precision == "int8":
        import numpy as np

        samples = calibration_samples(spec.calibration, meta, ctx.recipe_dir, ctx.log)
        nhwc = np.concatenate(samples).transpose(0, 2, 3, 1).astype(np.float32)
        np.save(work / "calibration.npy", nhwc)
        request.update(
            calibration=str(work / "calibration.npy"), input_name=name, channels=nhwc.shape[-1]
        )
        ctx.log.info("calibration: %d samples of %s", len(nhwc), list(nhwc.shape[1:]))
    return request


def _meta(
    source: dict[str, Any],
    described: dict[str, Any],
    spec: ConvertTfliteSpec,
    layout: str,
    rewrites: list[str],
    converted: dict[str, Any],
) -> dict[str, Any]:
    """The input's meta (data config, baked-in preprocessing…) plus the .tflite's facts."""
    return {
        **{k: v for k, v in source.items() if k not in _ONNX_FILE_FACTS},
        **described,
        "model_file": TFLITE_FILE,
        "precision": spec.precision,
        "layout": "NHWC",
        # what the runtime does to the NCHW tensors (or NCHW frames) verification feeds
        "transpose_input": layout == "NCHW",
        "tflite": {
            "converter": f"onnx2tf {converted['onnx2tf']}",
            "converter_patches": converted.get("patches", []),
            "quant_type": spec.quant_type if spec.precision == "int8" else None,
            "integer_io": spec.integer_io if spec.precision == "int8" else None,
            "rewrites": rewrites,
        },
    }
