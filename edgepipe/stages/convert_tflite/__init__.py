"""``convert-tflite``: ONNX → TFLite (LiteRT) with onnx2tf, in its own toolchain (stage.py);
onnx_prep.py makes the exact ONNX rewrites onnx2tf needs."""

from edgepipe.stages.convert_tflite.stage import ConvertTfliteSpec, ConvertTfliteStage

__all__ = ["ConvertTfliteSpec", "ConvertTfliteStage"]
