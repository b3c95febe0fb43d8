"""TFLite (LiteRT): ai-edge-litert's interpreter, XNNPACK on the CPU, threads pinned.

The model takes NHWC: verification's NCHW tensors are transposed here when the artifact says
so (``transpose_input``). A full-integer model takes and gives int8: inputs are quantized and
outputs dequantized with the tensors' own scale and zero point, as an app on the device does.
A model with a fixed batch (onnx2tf writes batch 1) runs a larger batch one sample at a time.
"""

from __future__ import annotations

__all__ = ["TFLITE_FILE", "TfliteRuntime", "describe_tflite"]

from pathlib import Path
from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

TFLITE_FILE = "model.tflite"
_NCHW_TO_NHWC = (0, 2, 3, 1)


@register_runtime
class TfliteRuntime(Runtime):
    name = "tflite"
    kinds = (ArtifactKind.TFLITE_MODEL,)
    summary = "LiteRT interpreter with XNNPACK, threads pinned; int8 I/O quantized at the edges"
    tools = ("ai-edge-litert",)

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        super().__init__(artifact, options)
        self.interpreter = _interpreter(artifact.path / TFLITE_FILE, options.threads)
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.output_names = [output["name"] for output in self.outputs]
        self.transpose = bool(artifact.meta.get("transpose_input"))
        self.fixed_batch = int(self.input["shape_signature"][0]) > 0
        threads = f" {options.threads} threads" if options.threads else ""
        self.label = f"tflite XNNPACK{threads}"

    def forward(self, batch: Any) -> list[Any]:
        """One array per output, in the model's order; NCHW in if the artifact says so."""
        import numpy as np

        batch = np.asarray(batch)
        if self.transpose:
            batch = batch.transpose(_NCHW_TO_NHWC)
        if not self.fixed_batch:
            return self._invoke(batch)
        rows = [self._invoke(batch[i : i + 1]) for i in range(len(batch))]
        return [np.concatenate(parts) for parts in zip(*rows, strict=True)]

    def _invoke(self, batch: Any) -> list[Any]:
        import numpy as np

        if tuple(batch.shape) != tuple(self.input["shape"]):
            # a dynamic dim (a composed model takes frames of any size): LiteRT refuses a
            # static one that differs, with its own message
            self.interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.outputs = self.interpreter.get_output_details()
        self.interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        self.interpreter.invoke()
        # get_tensor copies: the interpreter reuses its buffers on the next invoke
        return [
            _dequantize(np.asarray(self.interpreter.get_tensor(output["index"])), output)
            for output in self.outputs
        ]


def _interpreter(path: Path, threads: int | None) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _quantize(values: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if scale and dtype.kind in "iu" and np.asarray(values).dtype.kind == "f":
        limits = np.iinfo(dtype)
        quantized = np.round(values / scale + zero_point)
        return np.clip(quantized, limits.min, limits.max).astype(dtype)
    return values.astype(dtype, copy=False)


def _dequantize(values: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    scale, zero_point = detail["quantization"]
    if scale and values.dtype.kind in "iu":
        return (values.astype(np.float32) - zero_point) * np.float32(scale)
    return values


def describe_tflite(path: Path) -> dict[str, Any]:
    """``inputs``/``outputs`` (name, dtype, shape with a dynamic dim as '?', quantization) of
    the model at ``path``; opening it checks that LiteRT can run it."""
    interpreter = _interpreter(path, 1)
    return {
        "inputs": [_tensor(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor(d) for d in interpreter.get_output_details()],
    }


def _tensor(detail: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    signature = [int(d) for d in detail["shape_signature"]]
    scale, zero_point = detail["quantization"]
    described: dict[str, Any] = {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [d if d > 0 else "?" for d in signature],
    }
    if scale:
        described["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return described
