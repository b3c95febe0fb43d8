"""Which ops of an NNCF INT8 IR cost the most accuracy, measured on real inputs.

Both IRs run the same samples with every float activation exposed as an output; ops keep their
names through NNCF, so each activation of the INT8 IR has its float twin. The signal-to-noise
ratio (dB) of each against its twin shows where error accumulates, and an op's cost is what it
*loses*: the SQNR of its input minus the SQNR of its output (the same measure as ONNX Runtime's
``qdq_loss_debug`` in ``_ort_sensitivity``).
"""

from __future__ import annotations

__all__ = ["sensitive_ops"]

import math
from pathlib import Path
from typing import Any

_QUANTIZED = ("Convolution", "GroupConvolution", "MatMul")
_CLEAN_INPUT_DB = 60.0  # a model input has no error yet: count it as this clean
_SKIP = {"Constant", "Parameter", "Result", "FakeQuantize", "ShapeOf", "Convert"}


def sensitive_ops(float_ir: Path, int8_ir: Path, samples: list[Any]) -> list[tuple[str, float]]:
    """(op name, dB lost) for the INT8 IR's quantized ops, most costly first."""
    import openvino as ov

    core = ov.Core()
    float_model, int8_model = core.read_model(str(float_ir)), core.read_model(str(int8_ir))
    names = _float_activations(float_model) & _float_activations(int8_model)
    float_out = _run_exposed(core, float_model, names, samples)
    int8_out = _run_exposed(core, int8_model, names, samples)
    sqnr = {name: _sqnr(float_out[name], int8_out[name]) for name in names}
    losses = []
    for op in int8_model.get_ordered_ops():
        if op.get_type_name() not in _QUANTIZED or not _fed_by_fake_quantize(op):
            continue
        name = op.get_friendly_name()
        source = _producer_before_fake_quantize(op)
        before = _CLEAN_INPUT_DB if source.get_type_name() == "Parameter" else None
        before = sqnr.get(source.get_friendly_name(), before)
        if name in sqnr and before is not None and math.isfinite(before - sqnr[name]):
            losses.append((name, before - sqnr[name]))
    return sorted(losses, key=lambda item: -item[1])


def _float_activations(model: Any) -> set[str]:
    import openvino as ov

    return {
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() not in _SKIP
        and op.get_output_size() >= 1
        and op.get_output_element_type(0) == ov.Type.f32
        and op.get_output_partial_shape(0).rank.is_static
        and op.get_output_partial_shape(0).rank.get_length() >= 2
    }


def _run_exposed(core, model: Any, names: set[str], samples: list[Any]) -> dict[str, list[Any]]:
    """Every named activation's values on every sample."""
    import numpy as np

    model = model.clone()
    ops = [op for op in model.get_ops() if op.get_friendly_name() in names]
    model.add_outputs([op.output(0) for op in ops])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    first_exposed = len(compiled.outputs) - len(ops)
    values: dict[str, list[Any]] = {op.get_friendly_name(): [] for op in ops}
    request = compiled.create_infer_request()
    for sample in samples:
        request.infer({0: sample})
        for index, op in enumerate(ops):
            tensor = request.get_output_tensor(first_exposed + index).data
            values[op.get_friendly_name()].append(np.array(tensor, dtype=np.float64).ravel())
    return values


def _sqnr(reference: list[Any], quantized: list[Any]) -> float:
    import numpy as np

    ref, got = np.concatenate(reference), np.concatenate(quantized)
    if ref.shape != got.shape:
        return math.nan
    noise = max(float(np.linalg.norm(ref - got)), 1e-30)
    return 20 * math.log10(max(float(np.linalg.norm(ref)), 1e-30) / noise)


def _fed_by_fake_quantize(op: Any) -> bool:
    return any(
        op.input(i).get_source_output().get_node().get_type_name() == "FakeQuantize"
        for i in range(op.get_input_size())
    )


def _producer_before_fake_quantize(op: Any) -> Any:
    """The node whose activation feeds ``op``'s data input, past the FakeQuantize NNCF put."""
    node = op.input(0).get_source_output().get_node()
    if node.get_type_name() == "FakeQuantize":
        node = node.input(0).get_source_output().get_node()
    return node
