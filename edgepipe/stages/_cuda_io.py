"""TensorRT/CUDA at run time: GPU sessions, IO binding (ORT's
"I/O Binding" page: ``io_binding()``, ``OrtValue.ortvalue_from_numpy(a, "cuda", id)``,
``bind_output(name, "cuda")``, ``run_with_iobinding``), and timm's eval transform as matrix
products (CuPy or NumPy) with Pillow's resize weights (``Resample.c``: support scaled by the
downscale factor, 22-bit fixed-point taps, each pass rounded to 8 bits, horizontal first)."""

from __future__ import annotations

__all__ = [
    "IoBindingRunner",
    "TimmPreprocessor",
    "cuda_session",
    "open_gpu_session",
    "resample_weights",
]

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.gpu import preload_libraries
from edgepipe.imaging.preprocess_graph import Preprocessing
from edgepipe.models.onnx_io import ONNX_FILE

_PRECISION_BITS = 32 - 8 - 2  # Pillow Resample.c, 8 bits per channel


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


_FILTERS = {"bilinear": (lambda x: max(0.0, 1.0 - abs(x)), 1.0), "bicubic": (_bicubic, 2.0)}


@functools.lru_cache(maxsize=256)
def resample_weights(in_size: int, out_size: int, interpolation: str) -> Any:
    """Pillow's resize of one axis as ``[out_size, in_size]`` 22-bit fixed-point weights: multiply,
    add ``2**21``, floor-divide by ``2**22`` and clip to 0..255 to get Pillow's pixels."""
    import numpy as np

    scale = in_size / out_size
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    if interpolation == "nearest":  # Pillow's ImagingScaleAffine: a running sum, truncated
        position = scale * 0.5
        for out in range(out_size):
            matrix[out, min(int(position), in_size - 1)] = 1 << _PRECISION_BITS
            position += scale
        return matrix
    if interpolation not in _FILTERS:
        raise StageError(f"no GPU preprocessing for interpolation {interpolation!r}")
    kernel, support = _FILTERS[interpolation]
    filter_scale = max(scale, 1.0)
    support *= filter_scale
    inverse = 1.0 / filter_scale
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        weights = [kernel((x - center + 0.5) * inverse) for x in range(lo, hi)]
        total = sum(weights)
        weights = [w / total for w in weights] if total != 0.0 else weights
        matrix[out, lo:hi] = [
            int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5)) for w in weights
        ]
    return matrix


class TimmPreprocessor:
    """timm's eval transform of a data config: RGB uint8 HWC → ``[1, 3, H, W]`` float32, with
    CuPy on CUDA device ``device_id``, or NumPy on the host when it is None."""

    def __init__(self, data_config: dict[str, Any], device_id: int | None = None):
        import numpy as np

        mode = data_config.get("crop_mode")
        self.pre = Preprocessing(
            crop_size=tuple(data_config["input_size"][-2:]),
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            interpolation=data_config.get("interpolation") or "bilinear",
            crop_pct=data_config.get("crop_pct") or 0.875,
            crop_mode=mode if mode in ("squash", "border") else "center",
        )
        if self.pre.crop_mode == "border":
            raise StageError("crop_mode 'border' has no GPU preprocessing yet")
        self.xp = np
        if device_id is not None:
            import cupy

            cupy.cuda.Device(device_id).use()
            self.xp = cupy
        self._mean = self.xp.asarray(self.pre.mean, dtype=np.float32)
        self._std = self.xp.asarray(self.pre.std, dtype=np.float32)

    def __call__(self, image: Any) -> Any:
        xp = self.xp
        height, width = image.shape[:2]
        resized_h, resized_w = self.pre.resized(height, width)
        top, left = self.pre.crop_start(resized_h, resized_w)
        crop_h, crop_w = self.pre.crop_size
        pixels = xp.asarray(image[..., :3], dtype=xp.float64)
        if resized_w != width:  # horizontal pass first, as Pillow does: (H, C, W) @ (W, w)
            rows = resample_weights(width, resized_w, self.pre.interpolation)[left : left + crop_w]
            pixels = self._round(pixels.transpose(0, 2, 1) @ xp.asarray(rows.T)).transpose(0, 2, 1)
        else:
            pixels = pixels[:, left : left + crop_w]
        if resized_h != height:  # (h, H) @ (H, w * C)
            rows = resample_weights(height, resized_h, self.pre.interpolation)[top : top + crop_h]
            flat = xp.asarray(rows) @ pixels.reshape(height, -1)
            pixels = self._round(flat).reshape(crop_h, crop_w, 3)
        else:
            pixels = pixels[top : top + crop_h]
        # torchvision: to_tensor divides by 255 in float32, normalize subtracts then divides
        tensor = pixels.astype(xp.float32) / xp.float32(255)
        tensor = (tensor - self._mean) / self._std
        return xp.ascontiguousarray(tensor.transpose(2, 0, 1)[None])

    def _round(self, sums: Any) -> Any:
        half = float(1 << (_PRECISION_BITS - 1))
        return self.xp.clip(self.xp.floor((sums + half) / (1 << _PRECISION_BITS)), 0, 255)


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
