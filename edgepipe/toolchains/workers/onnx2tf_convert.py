"""Inside the onnx2tf toolchain: ONNX → .tflite with onnx2tf's Python API.

Request: ``onnx`` (path), ``out`` (folder), ``precision`` (fp32 | fp16 | int8), ``integer_io``,
``quant_type``, ``keep_shape`` (input names whose layout onnx2tf must not transpose) and, for
int8, ``calibration`` (NHWC float32 .npy of model-ready inputs) and ``input_name``.
Result: ``ok``, ``file`` (the .tflite written), ``onnx2tf`` (its version), or ``error``.
"""

import json
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path

# onnx2tf names each file after the ONNX file's stem plus what it holds
_SUFFIX = {
    "fp32": "_float32.tflite",
    "fp16": "_float16.tflite",
    "int8": "_integer_quant.tflite",
    "int8-io": "_full_integer_quant.tflite",
}


def _fix_bias_axis():
    """onnx2tf 2.6.9 gives a per-channel bias the quantized_dimension of its weights: 3 for a
    depthwise kernel [1, H, W, C]. A bias is 1-D, so LiteRT rejects the model ("quantized_
    dimension must be in range [0, 1). Was 3"), and per-channel INT8 of any net with depthwise
    convolutions (EfficientNet, MobileNet) fails. The bias's axis is set to 0 after onnx2tf's
    own quantization; nothing else changes. Returns what it patched (nothing on an onnx2tf
    without that function: a toolchain override with another version)."""
    from onnx2tf.tflite_builder import quantization

    original = getattr(quantization, "_quantize_bias_tensor", None)
    if original is None:
        return []

    def quantize_bias(*, tensor, **kwargs):
        original(tensor=tensor, **kwargs)
        if tensor.quantization is not None and len(getattr(tensor.data, "shape", ())) == 1:
            tensor.quantization.quantized_dimension = 0

    quantization._quantize_bias_tensor = quantize_bias
    return ["per-channel bias quantized_dimension 0 (onnx2tf 2.6.9 bug, depthwise convs)"]


def convert(request):
    import onnx2tf

    patches = _fix_bias_axis() if request["precision"] == "int8" else []

    onnx_path = Path(request["onnx"])
    options = {
        "input_onnx_file_path": str(onnx_path),
        "output_folder_path": request["out"],
        "copy_onnx_input_output_names_to_tflite": True,
        "batch_size": 1,
        "verbosity": "error",
        "keep_shape_absolutely_input_names": request.get("keep_shape") or None,
    }
    precision = request["precision"]
    if precision == "int8":
        # the samples are already model inputs (normalised): mean 0 and std 1 leave them as is
        channels = request["channels"]
        zeros, ones = [[[[0.0] * channels]]], [[[[1.0] * channels]]]
        calibration = [request["input_name"], request["calibration"], zeros, ones]
        options.update(
            output_integer_quantized_tflite=True,
            quant_type=request["quant_type"],
            custom_input_op_name_np_data_path=[calibration],
            input_quant_dtype="int8",
            output_quant_dtype="int8",
        )
    onnx2tf.convert(**options)
    written = _wanted(request)
    if not written.exists():
        made = sorted(p.name for p in Path(request["out"]).glob("*.tflite"))
        raise RuntimeError(f"onnx2tf wrote no {written.name} (it wrote: {made or 'nothing'})")
    version = metadata.version("onnx2tf")
    return {"ok": True, "file": str(written), "onnx2tf": version, "patches": patches}


def _wanted(request):
    """The file onnx2tf writes for the requested precision (and integer I/O)."""
    precision = request["precision"]
    variant = "int8-io" if precision == "int8" and request["integer_io"] else precision
    return Path(request["out"]) / (Path(request["onnx"]).stem + _SUFFIX[variant])


def _describe(exc):
    """The exception and what caused it, one line each: onnx2tf wraps the real reason."""
    parts = []
    while exc is not None and len(parts) < 4:
        lines = str(exc).strip().splitlines()
        message = lines[-1] if lines else ""
        message = message if len(message) <= 300 else message[:300] + "…"
        parts.append(f"{type(exc).__name__}: {message}".strip())
        exc = exc.__cause__ or exc.__context__
    return " (caused by ".join(parts) + ")" * (len(parts) - 1)


def _convert_in_child(request, result_path):
    """Convert in a forked child. With int8, onnx2tf goes on, unasked, to int16-activation
    variants, and validating them fails on some models: LiteRT aborts the process (SIGABRT,
    resnet50) or rejects a kernel (efficientnet_lite0's depthwise bias). The int8 file asked
    for was validated and written (renamed into place) before that: it is whole, and used."""
    pid = os.fork()
    if pid == 0:
        try:
            result = convert(request)
        except BaseException as exc:  # noqa: BLE001 - everything goes back as a result
            result = {"ok": False, "error": _describe(exc), "traceback": traceback.format_exc()}
        Path(result_path).write_text(json.dumps(result))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    result = json.loads(Path(result_path).read_text()) if Path(result_path).exists() else None
    wanted = _wanted(request)
    in_int16 = result is not None and "int16_act" in result.get("error", "")
    died = os.WIFSIGNALED(status)
    if (result is None or not result["ok"]) and (died or in_int16) and wanted.exists():
        why = f"signal {os.WTERMSIG(status)}" if died else result["error"]
        print(f"onnx2tf failed after writing {wanted.name}, on a variant not asked for: {why}")
        result = {"ok": True, "file": str(wanted), "onnx2tf": metadata.version("onnx2tf")}
    if result is None:
        result = {"ok": False, "error": f"onnx2tf died (status {status}) before {wanted.name}"}
    Path(result_path).write_text(json.dumps(result))


def main():
    request_path, result_path = sys.argv[1], sys.argv[2]
    _convert_in_child(json.loads(Path(request_path).read_text()), result_path)


if __name__ == "__main__":
    main()
