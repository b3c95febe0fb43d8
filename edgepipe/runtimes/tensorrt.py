"""A ``build-trt-cache`` artifact: its prebuilt TensorRT engines (never rebuilt) through ONNX
Runtime's TensorRT execution provider, the remaining nodes on CUDA, with IO binding."""

from __future__ import annotations

__all__ = ["TensorRtRuntime"]

from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import RuntimeOptions, register_runtime
from edgepipe.runtimes.onnxruntime import OnnxRuntime

PROVIDER = "TensorrtExecutionProvider"


@register_runtime
class TensorRtRuntime(OnnxRuntime):
    name = "onnxruntime-tensorrt"
    devices = ("cuda",)
    summary = "build-trt-cache artifacts: their prebuilt engines, IO binding"
    tools = ("onnxruntime-gpu", "tensorrt")
    priority = 10  # before plain ONNX Runtime: these ONNX models come with their engines

    @classmethod
    def opens(cls, artifact: Artifact) -> bool:
        return (
            artifact.kind == ArtifactKind.ONNX_MODEL
            and artifact.meta.get("execution_provider") == PROVIDER
        )

    @classmethod
    def needs_gpu(cls, options: RuntimeOptions) -> bool:
        return True

    @classmethod
    def preflight(cls, options: RuntimeOptions) -> list[str]:
        return []  # its artifacts come from build-trt-cache, whose preflight checks the GPU

    def _open_session(self) -> Any:
        from edgepipe.runtimes.cuda_sessions import IoBindingRunner, open_gpu_session

        meta = self.artifact.meta
        session, self._keepalive = open_gpu_session(self.artifact.path, meta, self.options.threads)
        self._binding = IoBindingRunner(session, "cuda", meta["trt"]["device_id"])
        self.label = "onnxruntime TensorRT (IO binding)"
        self.on_gpu = True
        return session
