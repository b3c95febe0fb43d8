"""Benchmark targets: each artifact kind in its runtime, with pinned threads and real inputs."""

from __future__ import annotations

__all__ = [
    "BenchTarget",
    "open_target",
    "prepare_batches",
    "time_gpu_preprocessing",
    "time_preprocessing",
]

import importlib.util
import time
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError
from edgepipe.imaging.samples import raw_pixels
from edgepipe.stages.base import Artifact, ArtifactKind
from edgepipe.stages.verification import timm_eval_transform

# Composed models take camera-sized frames; one size for all keeps batches stackable.
FRAME_SIZE = (640, 480)


class BenchTarget:
    """One artifact ready to time: ``run(batch)`` is the timed call, running ``in_flight``
    requests of the batch at once."""

    runtime = "?"
    in_flight = 1
    on_gpu = False  # inputs live on a CUDA device: host preprocessing can run there too

    def __init__(self, artifact: Artifact, threads: int):
        self.artifact = artifact
        self.threads = threads
        self.precision = artifact.meta.get("precision", "fp32")
        self.exec_precision = self.precision
        self.composed = artifact.meta.get("preprocessing") is not None

    def run(self, batch: Any) -> Any:
        raise NotImplementedError


class _TorchEager(BenchTarget):
    runtime = "torch eager"

    def __init__(self, artifact: Artifact, threads: int, recipe_dir: Path):
        import torch

        from edgepipe.models.torch_model import rebuild

        super().__init__(artifact, threads)
        torch.set_num_threads(threads)
        self.module = rebuild(artifact.path, recipe_dir)
        self._torch = torch

    def run(self, batch: Any) -> Any:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch))


class _OnnxRuntime(BenchTarget):
    runtime = "onnxruntime"

    def __init__(self, artifact: Artifact, threads: int, providers: list[str]):
        import onnxruntime as ort

        super().__init__(artifact, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise StageError(
                f"ONNX Runtime here lacks {', '.join(missing)} "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        if providers[0] != "CPUExecutionProvider":
            from edgepipe.gpu import preload_libraries

            preload_libraries()  # pip's CUDA/TensorRT libraries are off the loader's path
        self.session = ort.InferenceSession(
            str(artifact.path / "model.onnx"), options, providers=providers
        )
        # the Python wrapper silently falls back to the next provider when one fails to load
        loaded = self.session.get_providers()[0]
        if loaded != providers[0]:
            raise StageError(
                f"{providers[0]} did not load for {artifact.stage_id} (ONNX Runtime fell back "
                f"to {loaded}): are the CUDA/TensorRT libraries on the library path?"
            )
        self.runtime = f"onnxruntime {loaded.removesuffix('ExecutionProvider')}"
        self.input_name = self.session.get_inputs()[0].name
        self._binding = None
        if providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            from edgepipe.stages._cuda_io import IoBindingRunner

            # inputs and outputs stay on the device: the timed call has no host copies
            self._binding = IoBindingRunner(self.session, "cuda", 0)
            self.runtime += " (IO binding)"
            self.on_gpu = True

    def run(self, batch: Any) -> Any:
        if self._binding is not None:
            return self._binding.run(batch)
        return self.session.run(None, {self.input_name: batch})


class _OnnxRuntimeTensorRT(BenchTarget):
    """A build-trt-cache artifact: its prebuilt engines, never rebuilt, with IO binding."""

    runtime = "onnxruntime TensorRT (IO binding)"
    on_gpu = True

    def __init__(self, artifact: Artifact, threads: int):
        from edgepipe.stages._cuda_io import IoBindingRunner, open_gpu_session

        super().__init__(artifact, threads)
        self.session, self._keepalive = open_gpu_session(artifact.path, artifact.meta, threads)
        self._runner = IoBindingRunner(self.session, "cuda", artifact.meta["trt"]["device_id"])

    def run(self, batch: Any) -> Any:
        return self._runner.run(batch)


class _OpenVino(BenchTarget):
    runtime = "openvino"

    def __init__(self, artifact: Artifact, threads: int, options):
        import openvino as ov

        super().__init__(artifact, threads)
        config = {"PERFORMANCE_HINT": options.hint.upper(), "INFERENCE_NUM_THREADS": threads}
        if options.precision != "default":
            config["INFERENCE_PRECISION_HINT"] = options.precision
        core = ov.Core()
        ir = artifact.path / artifact.meta.get("model_file", "model.xml")
        self.compiled = core.compile_model(str(ir), options.device, config)
        # MEASUREMENTS #4: on AMX CPUs the default runs bf16; the report must say what ran
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.exec_precision = getattr(hint, "get_type_name", lambda: str(hint))()
        self.runtime = f"openvino {options.device} {options.hint}"
        self.queue = None
        if options.hint == "throughput":
            # the hint splits the device into streams: only concurrent requests fill them all
            self.in_flight = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(self.compiled, self.in_flight)
        else:
            self.request = self.compiled.create_infer_request()

    def run(self, batch: Any) -> Any:
        if self.queue is None:
            return self.request.infer({0: batch})
        for _ in range(self.in_flight):
            self.queue.start_async({0: batch})
        self.queue.wait_all()
        return None


class _TorchScript(BenchTarget):
    runtime = "torchscript"

    def __init__(self, artifact: Artifact, threads: int):
        import torch

        from edgepipe.stages.export_torchscript import load_torchscript

        super().__init__(artifact, threads)
        torch.set_num_threads(threads)
        self.module = load_torchscript(artifact.path / artifact.meta.get("model_file", "model.pt"))
        self._torch = torch

    def run(self, batch: Any) -> Any:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch))


def open_target(artifact: Artifact, spec, recipe_dir: Path, threads: int) -> BenchTarget:
    """The runtime for one artifact, configured from the benchmark spec."""
    kind = artifact.kind
    if kind == ArtifactKind.TORCH_MODEL:
        return _TorchEager(artifact, threads, recipe_dir)
    if kind == ArtifactKind.ONNX_MODEL and (
        artifact.meta.get("execution_provider") == "TensorrtExecutionProvider"
    ):
        return _OnnxRuntimeTensorRT(artifact, threads)
    if kind == ArtifactKind.ONNX_MODEL:
        return _OnnxRuntime(artifact, threads, list(spec.onnxruntime_providers))
    if kind == ArtifactKind.OPENVINO_IR:
        return _OpenVino(artifact, threads, spec.openvino)
    if kind == ArtifactKind.TORCHSCRIPT:
        return _TorchScript(artifact, threads)
    raise StageError(f"cannot benchmark a {kind.value} artifact")


def prepare_batches(
    target: BenchTarget, images: list[Any], data_config: dict[str, Any], batch_size: int
) -> list[Any]:
    """Real photos as this target's input: raw frames for composed graphs, else timm's tensors."""
    import numpy as np

    if target.composed:
        pre = target.artifact.meta["preprocessing"]
        size = (pre["width"], pre["height"]) if pre.get("height") else FRAME_SIZE
        singles = [raw_pixels(image.resize(size), pre) for image in images]
    else:
        transform = timm_eval_transform(data_config)
        singles = [transform(image).unsqueeze(0).numpy() for image in images]
    count = max(1, len(singles) // batch_size) * batch_size
    cycled = [singles[i % len(singles)] for i in range(max(count, batch_size))]
    return [np.concatenate(cycled[i : i + batch_size]) for i in range(0, len(cycled), batch_size)]


def time_gpu_preprocessing(
    images: list[Any], data_config: dict[str, Any], log, rounds: int = 5
) -> float | None:
    """Mean milliseconds of the same preprocessing in CuPy on CUDA device 0, for rows whose
    model runs there; None (host PIL is used) without CuPy or for a transform it lacks."""
    if importlib.util.find_spec("cupy") is None:
        log.info("CuPy is not installed: GPU rows count host (PIL) preprocessing")
        return None
    import cupy
    import numpy as np

    from edgepipe.stages._cuda_io import TimmPreprocessor

    try:
        preprocess = TimmPreprocessor(data_config, device_id=0)
    except StageError as exc:
        log.warning("%s: GPU rows count host (PIL) preprocessing", exc)
        return None
    frames = [np.asarray(image.resize(FRAME_SIZE).convert("RGB")) for image in images]
    preprocess(frames[0])  # the first call compiles CuPy's kernels
    cupy.cuda.Device(0).synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        for frame in frames:
            preprocess(frame)
    cupy.cuda.Device(0).synchronize()
    return (time.perf_counter() - started) * 1000.0 / (rounds * len(frames))


def time_preprocessing(images: list[Any], data_config: dict[str, Any], rounds: int = 5) -> float:
    """Mean milliseconds of timm's host preprocessing (PIL) per image from a camera frame."""
    transform = timm_eval_transform(data_config)
    frames = [image.resize(FRAME_SIZE) for image in images]
    started = time.perf_counter()
    for _ in range(rounds):
        for frame in frames:
            transform(frame)
    return (time.perf_counter() - started) * 1000.0 / (rounds * len(frames))
