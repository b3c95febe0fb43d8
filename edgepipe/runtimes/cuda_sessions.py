"""ONNX Runtime sessions on CUDA: TensorRT first and CUDA for the rest, a build-trt-cache
artifact's engines opened without a rebuild, and IO binding (ORT's "I/O Binding" page:
``io_binding()``, ``OrtValue.ortvalue_from_numpy(a, "cuda", id)``, ``bind_output(name, "cuda")``,
``run_with_iobinding``)."""

from __future__ import annotations

__all__ = ["IoBindingRunner", "cuda_session", "open_gpu_session"]

import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.gpu import preload_libraries
from edgepipe.models.onnx_io import ONNX_FILE


def cuda_session(model: Path, options: Any, trt_options: dict[str, str], device: str) -> Any:
    """TensorRT first, CUDA for the nodes TensorRT does not take (ORT's TensorRT EP page)."""
    import onnxruntime as ort

    providers = [
        ("TensorrtExecutionProvider", trt_options),
        ("CUDAExecutionProvider", {"device_id": device}),
    ]
    if missing := [p for p, _ in providers if p not in ort.get_available_providers()]:
        raise StageError(f"onnxruntime lacks {', '.join(missing)}: pip install onnxruntime-gpu")
    preload_libraries()  # pip's CUDA/TensorRT libraries are off the loader's path
    try:
        session = ort.InferenceSession(str(model), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidArgument/RuntimeException types
        raise StageError(
            f"ONNX Runtime could not open {model.name}: {summarize_exception(exc)}"
        ) from None
    # the Python wrapper silently falls back to the next provider when one fails to load
    if session.get_providers()[0] != "TensorrtExecutionProvider":
        raise StageError(
            f"TensorrtExecutionProvider did not load for {model.name} (running on "
            f"{', '.join(session.get_providers())}): are libnvinfer/CUDA on the library path?"
        )
    return session


def open_gpu_session(path: Path, meta: dict[str, Any], threads: int | None = None):
    """``(session, keepalive)`` for a TensorRT artifact: its EP-context model when it has one
    (the engine is loaded, never rebuilt), else model.onnx over a temporary copy of the engine
    cache (``keepalive``): ORT rewrites a cache that does not fit; artifacts are read-only."""
    import onnxruntime as ort

    trt = meta.get("trt") or {}
    device = str(trt.get("device_id", 0))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or 0
    if trt.get("ep_context_model"):
        # onnx_ctx_model_helper.h (EPCONTEXT_WARNING): no graph optimisation loads it fastest
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return cuda_session(
            path / trt["ep_context_model"], options, {"device_id": device}, device
        ), None
    keepalive = tempfile.TemporaryDirectory(prefix="edgepipe-trt-")
    cache = Path(keepalive.name) / trt.get("engine_cache", "trt_engines")
    shutil.copytree(path / cache.name, cache)
    trt_options = {**trt.get("runtime_options", {}), "trt_engine_cache_path": str(cache)}
    return cuda_session(path / ONNX_FILE, options, trt_options, device), keepalive


class IoBindingRunner:
    """``run(batch)`` with inputs and outputs on the device: a host batch is uploaded the first
    time it is seen (in the warm-up), a CuPy one bound by pointer; ``run`` returns when the GPU is
    done (run option ``disable_synchronize_execution_providers`` = "0")."""

    def __init__(self, session: Any, device_type: str = "cuda", device_id: int = 0):
        import onnxruntime as ort

        self._ort, self.session = ort, session
        self.device_type, self.device_id = device_type, device_id
        self.binding = session.io_binding()
        self.input = session.get_inputs()[0]
        for output in session.get_outputs():  # allocated on the device at each run
            self.binding.bind_output(output.name, device_type, device_id)
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "0")
        self._held: dict[int, tuple[Any, Any]] = {}

    def run(self, batch: Any) -> None:
        held = self._held.get(id(batch))
        if held is None or held[0] is not batch:  # first sight, in the warm-up: upload once
            on_device = hasattr(batch, "__cuda_array_interface__")
            upload = self._ort.OrtValue.ortvalue_from_numpy
            value = None if on_device else upload(batch, self.device_type, self.device_id)
            held = self._held[id(batch)] = (batch, value)
        if held[1] is not None:
            self.binding.bind_ortvalue_input(self.input.name, held[1])
        else:  # a CuPy array: bind its device buffer by pointer
            args = (self.device_id, batch.dtype, list(batch.shape), batch.data.ptr)
            self.binding.bind_input(self.input.name, "cuda", *args)
        self.session.run_with_iobinding(self.binding, self.run_options)

    def outputs(self) -> list[Any]:
        """The last run's outputs, copied to the host."""
        return self.binding.copy_outputs_to_cpu()
