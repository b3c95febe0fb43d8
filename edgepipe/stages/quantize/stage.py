"""``quantize``: INT8 (ONNX Runtime static/dynamic, OpenVINO NNCF, PyTorch PT2E) and FP16
conversion.

Defaults steer to the fast path measured in MEASUREMENTS.md: static QDQ, per-channel, only
Conv/MatMul/Gemm (quantizing Add/LayerNorm/Softmax wrecks ViTs), and dynamic mode limited to
MatMul/Gemm because dynamic Conv becomes ConvInteger, ~3x slower than fp32.
"""

from __future__ import annotations

__all__ = ["NncfOptions", "OrtOptions", "QuantizeSpec", "QuantizeStage", "TorchOptions"]

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgepipe.artifacts import ARTIFACT_FILE
from edgepipe.env import cpu_target, cxx_compiler_problems
from edgepipe.imaging.samples import BUNDLED_PHOTO_TOOLS
from edgepipe.stages.base import (
    ArtifactKind,
    FieldError,
    SingleInputSpec,
    Stage,
    StageContext,
    StageSpec,
    register_stage,
)
from edgepipe.stages.quantize.calibration import (
    CalibrationSpec,
    calibration_problems,
    describe_calibration,
)
from edgepipe.stages.quantize.options import NncfOptions, OrtOptions, TorchOptions
from edgepipe.stages.quantize.target import AccuracyTarget


class QuantizeSpec(SingleInputSpec):
    """Quantize or down-cast a model."""

    type: Literal["quantize"] = Field(description="Stage type.")
    key_when_set: ClassVar[tuple[str, ...]] = ("torch",)

    backend: Literal["onnxruntime", "openvino", "torch"] = Field(
        default="onnxruntime",
        description=(
            "onnxruntime takes an ONNX model; openvino (NNCF) takes an OpenVINO IR; torch "
            "(PT2E) takes the torch model and gives an AOTInductor package or ExecuTorch program."
        ),
    )
    mode: Literal["static", "dynamic", "fp16"] = Field(
        default="static",
        description=(
            "static: INT8 with calibration (recommended); dynamic: INT8 weights, activations "
            "at run time (onnxruntime; slow on conv nets); fp16: float16 weights and ops "
            "(onnxruntime)."
        ),
    )
    calibration: CalibrationSpec = Field(
        default_factory=CalibrationSpec, description=("Calibration data for static mode.")
    )
    onnxruntime: OrtOptions = Field(
        default_factory=OrtOptions, description=("Settings for backend: onnxruntime.")
    )
    openvino: NncfOptions = Field(
        default_factory=NncfOptions, description=("Settings for backend: openvino.")
    )
    torch: TorchOptions = Field(
        default_factory=TorchOptions, description=("Settings for backend: torch.")
    )
    keep_io_types: bool = Field(
        default=True,
        description=("fp16: keep float32 inputs and outputs so callers need not change."),
    )
    target: AccuracyTarget | None = Field(
        default=None,
        description=(
            "What the quantized model must keep (parity gates, or a top-1 drop on a labelled "
            "folder). When the configured INT8 misses it, the stage recovers by itself and "
            "keeps the most faithful candidate of the cheapest rung that passes; every "
            "candidate is reported."
        ),
    )

    @model_validator(mode="after")
    def _mode_fits_backend(self) -> QuantizeSpec:
        if self.backend == "openvino" and self.mode != "static":
            raise FieldError(
                "mode",
                "NNCF does static INT8 only; for fp16 weights use "
                "convert-openvino with compress_to_fp16: true",
            )
        if self.backend == "torch" and self.mode == "fp16":
            raise FieldError(
                "mode", "backend torch builds INT8 (static or dynamic); for fp16 use onnxruntime"
            )
        return self

    @model_validator(mode="after")
    def _target_fits_mode(self) -> QuantizeSpec:
        if self.target is not None and self.mode == "dynamic":
            raise FieldError("target", "applies to static INT8 and fp16, not to mode: dynamic")
        return self

    def file_fields(self) -> dict[str, Path]:
        class_map = self.target.class_map if self.target else None
        return {"target_class_map": class_map} if class_map else {}

    def dir_fields(self) -> dict[str, Path]:
        folders = {}
        if self.calibration.images and self.mode == "static":
            folders["calibration_images"] = self.calibration.images
        if self.target is not None:
            folders.update(
                (name, value)
                for name, value in (
                    ("target_images", self.target.images),
                    ("target_dataset", self.target.dataset),
                )
                if value is not None
            )
        return folders


# 2: dynamic mode observes the weights before converting; 3: reproducible AOTI packages
TORCH_BACKEND_VERSION = 3

_BACKEND_TOOLS = {
    "onnxruntime": ("onnx", "onnxruntime"),
    "openvino": ("openvino", "nncf"),
    "torch": ("torch", "timm", "torchao"),
}
# what each back end takes when it differs from what it gives
_BACKEND_INPUT = {"torch": (ArtifactKind.TORCH_MODEL,)}


@register_stage
class QuantizeStage(Stage):
    type = "quantize"
    spec_class = QuantizeSpec
    # 2: composed models quantize their network only; calibration samples a folder evenly and
    # defaults to 64 samples; strided calibration; `target` and recovery. 3: recovery keeps the
    # most faithful candidate that passes, and no candidate's timing is in the artifact
    version = 3
    input_kinds = (ArtifactKind.ONNX_MODEL, ArtifactKind.OPENVINO_IR, ArtifactKind.TORCH_MODEL)
    summary = "INT8 quantization (ORT static/dynamic, OpenVINO NNCF, PT2E) or FP16 conversion."

    def headline(self, files: dict[str, Path]) -> dict[str, Any]:
        if ARTIFACT_FILE not in files:
            return {}
        quantization = json.loads(files[ARTIFACT_FILE].read_text())["meta"]["quantization"]
        # what a rebuild replays instead of searching again (runner: recorded_settings); the
        # same whether this build searched or replayed, so the lock does not churn
        recovery = quantization.get("recovery") or {}
        return {
            "quantization": {
                "settings": quantization["settings"],
                "recovered": recovery.get("recovered", False),
            }
        }

    def output_kind(self, spec: QuantizeSpec) -> ArtifactKind:
        if spec.backend == "torch":
            if spec.torch.quantizer == "xnnpack":
                return ArtifactKind.EXECUTORCH_PROGRAM
            return ArtifactKind.AOTI_PACKAGE
        return ArtifactKind.OPENVINO_IR if spec.backend == "openvino" else ArtifactKind.ONNX_MODEL

    def accepted_kinds(self, field: str, spec: StageSpec | None = None) -> tuple[ArtifactKind, ...]:
        if spec is None:
            return self.input_kinds
        return _BACKEND_INPUT.get(spec.backend) or (self.output_kind(spec),)

    def not_reproducible_for(self, spec: QuantizeSpec) -> str | None:
        if spec.backend == "torch" and spec.torch.quantizer == "x86-inductor":
            # measured: two builds of the same inputs differ only in the packed weights'
            # opaque_metadata in the generated C++ (and so in its hash-named files)
            return (
                "an AOTInductor package of a frozen INT8 graph embeds oneDNN's packed-weight "
                "descriptors, whose bytes differ between builds"
            )
        return None

    def key_extra(self, spec: QuantizeSpec) -> dict[str, Any]:
        if spec.backend != "torch":
            return {}
        # the PT2E back end's own implementation version: bumping the stage's would move the
        # keys (and locks) of every other back end
        extra: dict[str, Any] = {"torch_backend_version": TORCH_BACKEND_VERSION}
        if spec.torch.quantizer == "x86-inductor":  # C++ compiled for this CPU's vector ISA
            extra.update(cpu_target())
        return extra

    def tools_for(self, spec: QuantizeSpec) -> tuple[str, ...]:
        common = ("numpy", "timm", "torch", "pillow") if spec.mode == "static" else ("numpy",)
        backend = _BACKEND_TOOLS[spec.backend]
        if spec.backend == "torch" and spec.torch.quantizer == "xnnpack":
            backend = (*backend, "executorch")
        images = (
            BUNDLED_PHOTO_TOOLS if spec.mode == "static" and not spec.calibration.images else ()
        )
        return (*backend, *common, *images)

    def preflight(self, spec: QuantizeSpec, recipe_dir: Path) -> list[str]:
        problems = super().preflight(spec, recipe_dir)
        if spec.mode == "static":
            problems += calibration_problems(spec.calibration, recipe_dir)
        if spec.backend == "torch" and spec.torch.quantizer == "x86-inductor":
            problems += cxx_compiler_problems("AOTInductor")
        return problems

    def run(self, spec: QuantizeSpec, ctx: StageContext) -> dict[str, Any]:
        if spec.backend == "openvino":
            from edgepipe.stages.quantize.nncf_backend import NncfBackend as Backend
        elif spec.backend == "torch":
            from edgepipe.stages.quantize.torch_backend import TorchBackend as Backend
        else:
            from edgepipe.stages.quantize.ort_backend import OrtBackend as Backend
        from edgepipe.stages.quantize.recovery import quantize_with_target

        backend = Backend(spec, ctx.inputs[0], ctx)
        try:
            if spec.target is None:
                meta = backend.build(backend.configured(), ctx.out_dir)
            else:
                meta = quantize_with_target(backend, spec, ctx)
        finally:
            backend.close()
        if spec.mode == "static":
            calibration = describe_calibration(spec.calibration, ctx.recipe_dir)
            meta["quantization"] = {**meta["quantization"], "calibration": calibration}
        return meta
