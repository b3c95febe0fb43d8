"""Per back end settings of the ``quantize`` stage: ONNX Runtime, NNCF (OpenVINO) and PT2E
(PyTorch)."""

from __future__ import annotations

__all__ = ["NncfOptions", "OrtOptions", "TorchOptions"]

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.spec_bounds import MAX_SAMPLES


class OrtOptions(BaseModel):
    """ONNX Runtime quantization settings (backend: onnxruntime)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["QDQ", "QOperator"] = Field(
        default="QDQ",
        description=("QDQ (portable, what TensorRT/OpenVINO read) or QOperator (QLinearConv…)."),
    )
    per_channel: bool = Field(default=True, description="Per-channel weight scales.")
    calibrate_method: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="How activation ranges are chosen from calibration data."
    )
    activation_type: Literal["uint8", "int8"] = Field(
        default="uint8",
        description=(
            "Activation type; uint8 activations + int8 weights is the fast x86 (VNNI) combination."
        ),
    )
    weight_type: Literal["int8", "uint8"] = Field(default="int8", description="Weight type.")
    op_types: list[str] | None = Field(
        default=None,
        description=(
            "Operator types to quantize. Default: Conv, MatMul, Gemm (static); MatMul, Gemm "
            "(dynamic)."
        ),
    )
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names to keep float.")
    pre_process: bool = Field(
        default=True,
        description=("Run ORT's quant_pre_process (shape inference + graph optimisation) first."),
    )
    reduce_range: bool = Field(default=False, description="7-bit weights, for CPUs without VNNI.")


class NncfOptions(BaseModel):
    """NNCF post-training quantization settings (backend: openvino)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["performance", "mixed"] = Field(
        default="performance",
        description=(
            "performance: symmetric activations; mixed: asymmetric activations (better for "
            "non-ReLU models)."
        ),
    )
    model_type: Literal["auto", "transformer", "cnn"] = Field(
        default="auto",
        description=(
            "transformer keeps attention-sensitive ops in float; auto detects Softmax+MatMul."
        ),
    )
    subset_size: int = Field(
        default=300,
        ge=1,
        le=MAX_SAMPLES,
        description=f"Calibration samples NNCF uses (at most calibration.count; {MAX_SAMPLES}).",
    )
    fast_bias_correction: bool = Field(default=True, description="Faster bias correction.")
    ignored_names: list[str] = Field(default_factory=list, description="Nodes to keep float.")
    ignored_types: list[str] = Field(default_factory=list, description="Op types to keep float.")
    ignored_patterns: list[str] = Field(
        default_factory=list, description=("Regexes of node names to keep float.")
    )


class TorchOptions(BaseModel):
    """PyTorch PT2E quantization settings (backend: torch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantizer: Literal["x86-inductor", "xnnpack"] = Field(
        default="x86-inductor",
        description=(
            "x86-inductor: X86InductorQuantizer, compiled by AOTInductor into an int8 .pt2 "
            "package for this x86 CPU; xnnpack: XNNPACKQuantizer, lowered to an ExecuTorch "
            ".pte (XNNPACK delegate, batch 1) for mobile and embedded CPUs."
        ),
    )
    observer: Literal["histogram", "minmax"] = Field(
        default="histogram",
        description="How activation ranges are chosen from calibration data (static mode).",
    )
    per_channel: bool = Field(default=True, description="Per-channel weight scales.")
    float_modules: list[str] = Field(
        default_factory=list,
        description="Module names (as in model.named_modules(), e.g. conv_stem) to keep float.",
    )
    max_batch: int = Field(
        default=64, ge=2, le=4096, description="x86-inductor: largest batch the package takes."
    )
