"""ONNX Runtime back end of the ``quantize`` stage: static/dynamic INT8 and FP16."""

from __future__ import annotations

__all__ = ["quantize_onnx"]

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.stages.base import StageContext
from edgepipe.stages.calibration import calibration_samples
from edgepipe.stages.onnx_io import MODEL_FILE, describe_onnx

_STATIC_OPS = ["Conv", "MatMul", "Gemm"]
# Dynamic Conv becomes ConvInteger, ~3x slower than fp32 (MEASUREMENTS #3): leave it float.
_DYNAMIC_OPS = ["MatMul", "Gemm"]


def quantize_onnx(spec, ctx: StageContext) -> dict[str, Any]:
    """Quantize ``ctx.inputs[0]`` (an ONNX artifact) into ``ctx.out_dir`` per ``spec``."""
    source = ctx.inputs[0]
    src = source.path / MODEL_FILE
    target = ctx.out_dir / MODEL_FILE
    external = bool(source.meta.get("external_data"))
    try:
        if spec.mode == "fp16":
            settings = _to_fp16(src, target, spec.keep_io_types, external)
        else:
            work = _pre_processed(src, ctx, spec.onnxruntime.pre_process, external)
            if spec.mode == "static":
                settings = _static(work, target, spec, source.meta, ctx, external)
            else:
                settings = _dynamic(work, target, spec, ctx, external)
    except StageError:
        raise
    except Exception as exc:  # ORT raises RuntimeError/ValueError/onnx errors for bad graphs
        raise StageError(f"ONNX Runtime quantization failed: {summarize_exception(exc)}") from None
    _clean_scratch(ctx.out_dir)
    precision = "fp16" if spec.mode == "fp16" else "int8"
    return {
        **source.meta,
        **describe_onnx(target),
        "precision": precision,
        "quantization": {"backend": "onnxruntime", "mode": spec.mode, **settings},
    }


def _pre_processed(src: Path, ctx: StageContext, enabled: bool, external: bool) -> Path:
    """ORT's recommended first step: symbolic shape inference + graph optimisation."""
    if not enabled:
        return src
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = ctx.out_dir / "_scratch" / "pre.onnx"
    work.parent.mkdir()
    try:
        quant_pre_process(
            str(src),
            str(work),
            save_as_external_data=external,
            external_data_location="pre.onnx.data" if external else None,
        )
    except Exception as exc:  # symbolic shape inference fails on some graphs: fall back
        ctx.log.warning(
            "quant_pre_process failed (%s); quantizing the model as is",
            summarize_exception(exc, 200),
        )
        return src
    return work


def _static(
    work: Path, target: Path, spec, meta: dict[str, Any], ctx: StageContext, external: bool
) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    options = spec.onnxruntime
    samples = calibration_samples(spec.calibration, meta, ctx.recipe_dir, ctx.log)
    op_types = options.op_types or _STATIC_OPS
    quantize_static(
        str(work),
        str(target),
        _Reader(work, samples),
        quant_format=QuantFormat.QDQ if options.format == "QDQ" else QuantFormat.QOperator,
        op_types_to_quantize=op_types,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        activation_type=_qtype(options.activation_type),
        weight_type=_qtype(options.weight_type),
        nodes_to_exclude=options.exclude_nodes or None,
        use_external_data_format=external,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[options.calibrate_method],
    )
    ctx.log.info(
        "static INT8 (%s, per_channel=%s) of %s on %d calibration samples",
        options.format,
        options.per_channel,
        ", ".join(op_types),
        len(samples),
    )
    return {
        "format": options.format,
        "per_channel": options.per_channel,
        "op_types": op_types,
        "calibrate_method": options.calibrate_method,
        "samples": len(samples),
    }


def _dynamic(work: Path, target: Path, spec, ctx: StageContext, external: bool) -> dict[str, Any]:
    from onnxruntime.quantization import quantize_dynamic

    options = spec.onnxruntime
    op_types = options.op_types or _DYNAMIC_OPS
    ops = _op_counts(work)
    convs = ops["Conv"]
    if "Conv" in op_types and convs:
        ctx.log.warning(
            "dynamic quantization of %d Conv nodes produces ConvInteger, typically "
            "~3x slower than fp32 on CPU; use mode: static for conv nets",
            convs,
        )
    elif convs and convs >= ops["MatMul"] + ops["Gemm"]:
        ctx.log.warning(
            "this graph is conv-heavy (%d Conv): dynamic mode leaves them float and "
            "gains little; mode: static quantizes them",
            convs,
        )
    quantize_dynamic(
        str(work),
        str(target),
        op_types_to_quantize=op_types,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        weight_type=_qtype(options.weight_type),
        nodes_to_exclude=options.exclude_nodes or None,
        use_external_data_format=external,
    )
    return {"op_types": op_types, "per_channel": options.per_channel}


def _to_fp16(src: Path, target: Path, keep_io_types: bool, external: bool) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
    onnx.save(
        model,
        str(target),
        save_as_external_data=external,
        location=f"{MODEL_FILE}.data" if external else None,
    )
    return {"keep_io_types": keep_io_types}


class _Reader:
    """ORT CalibrationDataReader over precomputed samples (ORT only calls ``get_next``)."""

    def __init__(self, model: Path, samples: list[Any]):
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        self.name = next(i.name for i in graph.input if i.name not in initializers)
        self.samples = iter(samples)

    def get_next(self) -> dict[str, Any] | None:
        sample = next(self.samples, None)
        return None if sample is None else {self.name: sample}

    def rewind(self) -> None:  # pragma: no cover - part of ORT's reader protocol
        raise StageError("calibration reader cannot rewind")


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _op_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _clean_scratch(out_dir: Path) -> None:
    shutil.rmtree(out_dir / "_scratch", ignore_errors=True)
    for leftover in out_dir.glob("*.onnx-*"):  # ORT's augmented calibration models
        leftover.unlink()
