"""OpenVINO back end of the ``quantize`` stage: NNCF post-training INT8 of an OpenVINO IR."""

from __future__ import annotations

__all__ = ["quantize_ir"]

from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.stages.base import StageContext
from edgepipe.stages.calibration import calibration_samples
from edgepipe.stages.convert_openvino import IR_FILE, describe_ir

# An attention block: OpenVINO's frontends fuse it to ScaledDotProductAttention, or leave
# MatMul → Softmax → MatMul. A Softmax that feeds no MatMul (a classifier's post-processing
# on a conv net) is not attention.
_ATTENTION_OPS = ("ScaledDotProductAttention",)


def quantize_ir(spec, ctx: StageContext) -> dict[str, Any]:
    """INT8-quantize ``ctx.inputs[0]`` (an OpenVINO IR) into ``ctx.out_dir`` with NNCF.

    Args:
        spec: The stage's ``QuantizeSpec`` (backend ``openvino``, mode ``static``).
        ctx: The stage context; its first input is the IR to quantize.

    Returns:
        The artifact metadata: the input's, the new IR's description, ``precision: int8`` and
        the settings NNCF ran with.
    """
    import openvino as ov

    source, options = ctx.inputs[0], spec.openvino
    model = ov.Core().read_model(str(source.path / IR_FILE))
    images = calibration_samples(spec.calibration, source.meta, ctx.recipe_dir, ctx.log)
    samples = _batched(images, model)
    model_type = _model_type(options.model_type, model)
    subset = min(options.subset_size, len(samples))
    quantized = _quantize(model, samples, options, model_type, subset)
    target = ctx.out_dir / IR_FILE
    # compress_to_fp16 would also halve the float weights NNCF left unquantized
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    settings = _settings(options, model_type, subset, len(images), quantized, ctx)
    return {**source.meta, **describe_ir(target), "precision": "int8", "quantization": settings}


def _settings(options, model_type: str, subset: int, samples: int, quantized, ctx) -> dict:
    """What NNCF ran with, for the artifact's meta; logs how many FakeQuantize it inserted."""
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
    ctx.log.info(
        "NNCF INT8 (%s preset, %s): %d FakeQuantize nodes from %d calibration samples",
        options.preset,
        model_type,
        fake_quantize,
        subset,
    )
    if not fake_quantize:
        ctx.log.warning("NNCF inserted no FakeQuantize node: the IR is not quantized")
    return {
        "backend": "openvino",
        "preset": options.preset,
        "model_type": model_type,
        "subset_size": subset,
        "fast_bias_correction": options.fast_bias_correction,
        "samples": samples,
        "fake_quantize": fake_quantize,
    }


def _quantize(model: Any, samples: list[Any], options, model_type: str, subset: int) -> Any:
    import nncf

    try:
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset(options.preset),
            model_type=nncf.ModelType.TRANSFORMER if model_type == "transformer" else None,
            subset_size=subset,
            fast_bias_correction=options.fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(
                names=list(options.ignored_names),
                types=list(options.ignored_types),
                patterns=list(options.ignored_patterns),
            ),
        )
    except nncf.ValidationError as exc:  # e.g. an ignored name or type that matches nothing
        raise StageError(
            f"NNCF refused the settings: {summarize_exception(exc)}. Check openvino.ignored_names, "
            "ignored_types and ignored_patterns against the IR's node names and op types"
        ) from None
    except Exception as exc:  # NNCF surfaces OpenVINO's RuntimeError for graphs it cannot run
        raise StageError(f"NNCF quantization failed: {summarize_exception(exc)}") from None


def _model_type(requested: str, model: Any) -> str:
    """'transformer' or 'cnn': as requested, or detected from the graph's attention ops."""
    if requested != "auto":
        return requested
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind in _ATTENTION_OPS:
            return "transformer"
        if kind == "Softmax" and any(
            target.get_node().get_type_name() == "MatMul"
            for target in op.output(0).get_target_inputs()
        ):
            return "transformer"
    return "cnn"


def _batched(samples: list[Any], model: Any) -> list[Any]:
    """Calibration samples are [1, ...]; an IR with a static batch B gets B of them at a time."""
    import numpy as np

    first = model.inputs[0].get_partial_shape()
    if first.rank.is_dynamic or first.rank.get_length() == 0 or first[0].is_dynamic:
        return samples
    batch = first[0].get_length()
    if batch == 1:
        return samples
    if len(samples) < batch:
        raise StageError(
            f"the IR takes a fixed batch of {batch} but calibration has {len(samples)} "
            f"samples: set calibration.count to at least {batch}"
        )
    return [
        np.concatenate(samples[i : i + batch]) for i in range(0, len(samples) - batch + 1, batch)
    ]
