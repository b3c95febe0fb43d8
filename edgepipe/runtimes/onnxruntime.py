"""ONNX Runtime, on the CPU or, with a GPU execution provider, on CUDA with IO binding."""

from __future__ import annotations

__all__ = ["OnnxRuntime"]

from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.errors import StageError
from edgepipe.models.onnx_io import ONNX_FILE
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

_CPU = "CPUExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"
_BOUND = ("CUDAExecutionProvider", _TENSORRT)


@register_runtime
class OnnxRuntime(Runtime):
    """An ONNX model in an InferenceSession with the options' execution providers."""

    name = "onnxruntime"
    kinds = (ArtifactKind.ONNX_MODEL,)
    summary = "InferenceSession with the options' providers; IO binding on CUDA"
    devices = ("cpu", "cuda")
    tools = ("onnxruntime",)

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        super().__init__(artifact, options)
        self._binding = None
        self.session = self._open_session()
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def needs_gpu(cls, options: RuntimeOptions) -> bool:
        return any(p != _CPU for p in options.onnxruntime_providers)

    @classmethod
    def preflight(cls, options: RuntimeOptions) -> list[str]:
        if not cls.needs_gpu(options):
            return []
        from edgepipe.gpu import gpu_problems

        return gpu_problems(need_tensorrt=_TENSORRT in options.onnxruntime_providers)

    def _session_options(self) -> Any:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if self.options.threads:
            session_options.intra_op_num_threads = self.options.threads
            session_options.inter_op_num_threads = 1
        return session_options

    def _open_session(self) -> Any:
        import onnxruntime as ort

        providers = list(self.options.onnxruntime_providers)
        available = ort.get_available_providers()
        if missing := [p for p in providers if p not in available]:
            raise StageError(
                f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(available)})"
            )
        if providers[0] != _CPU:
            from edgepipe.gpu import preload_libraries

            preload_libraries()  # pip's CUDA/TensorRT libraries are off the loader's path
        path = str(self.artifact.path / ONNX_FILE)
        session = ort.InferenceSession(path, self._session_options(), providers=providers)
        # the Python wrapper silently falls back to the next provider when one fails to load
        loaded = session.get_providers()[0]
        if loaded != providers[0]:
            raise StageError(
                f"{providers[0]} did not load for {self.artifact.stage_id} (ONNX Runtime fell "
                f"back to {loaded}): are the CUDA/TensorRT libraries on the library path?"
            )
        self.label = f"onnxruntime {loaded.removesuffix('ExecutionProvider')}"
        if loaded in _BOUND:
            from edgepipe.runtimes.cuda_sessions import IoBindingRunner

            # inputs and outputs stay on the device: the timed call has no host copies
            self._binding = IoBindingRunner(session, "cuda", 0)
            self.label += " (IO binding)"
            self.on_gpu = True
        return session

    def forward(self, batch: Any) -> list[Any]:
        return self.session.run(None, {self.input.name: batch})

    def run(self, batch: Any) -> Any:
        if self._binding is not None:
            return self._binding.run(batch)
        return self.forward(batch)
