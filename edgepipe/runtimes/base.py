"""What every runtime shares: the options it is opened with, the base class, the registry.

A runtime opens artifacts of some kinds (``kinds``, refined by ``opens``) on some devices, runs a
batch (host arrays in; ``forward`` gives host arrays out, ``run`` is the call a benchmark times
and may leave outputs on the device), knows its size on disk, the tools it needs and what its
options need from the machine (``preflight``). The first registered runtime, by ``priority``,
that opens an artifact is the one used.
"""

from __future__ import annotations

__all__ = [
    "OpenVinoOptions",
    "Runtime",
    "RuntimeOptions",
    "TorchCallable",
    "open_runtime",
    "preflight_problems",
    "register_runtime",
    "registered_runtimes",
    "runnable_kinds",
    "runtime_for",
]

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgepipe.artifacts import Artifact, ArtifactKind, artifact_bytes
from edgepipe.errors import StageError
from edgepipe.imaging.samples import fit_fixed_size, raw_pixels


@dataclass(frozen=True)
class OpenVinoOptions:
    """How OpenVINO compiles an IR. None leaves a property to OpenVINO."""

    device: str = "CPU"
    hint: str | None = None
    """PERFORMANCE_HINT: "latency" or "throughput" (several requests in flight)."""
    precision: str | None = "f32"
    """INFERENCE_PRECISION_HINT; f32 by default: OpenVINO runs bf16 on AMX CPUs otherwise
    (MEASUREMENTS #4), and a verification must check the artifact, not that choice."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How artifacts are opened. The defaults are what verification (parity, evaluate,
    quantization targets) uses: library-default threads, the CPU, true fp32."""

    threads: int | None = None
    onnxruntime_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    openvino: OpenVinoOptions = field(default_factory=OpenVinoOptions)
    recipe_dir: Path = Path(".")
    """Where a torch model's builder resolves recipe-relative paths (a local factory module)."""
    torch_compile: str | None = None
    """A torch model run through torch.compile: "inductor", "inductor-max-autotune" or
    "openvino" (the benchmark's compiled rows); None: eager."""
    channels_last: bool = False
    """A torch model and its inputs in channels-last memory format."""


class Runtime:
    """One artifact, opened and ready to run."""

    name: ClassVar[str]
    """Registry name, e.g. ``onnxruntime``."""
    kinds: ClassVar[tuple[ArtifactKind, ...]]
    """Artifact kinds it opens."""
    summary: ClassVar[str] = ""
    """One line for ``edgepipe runtimes``."""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    tools: ClassVar[tuple[str, ...]] = ()
    """Python distributions it runs on (their versions describe what ran)."""
    priority: ClassVar[int] = 0
    """Asked before runtimes of lower priority (a TensorRT artifact is an ONNX model too)."""

    label: str
    """What ran, for tables: e.g. ``onnxruntime CPU``, ``openvino CPU latency``."""
    output_names: list[str]
    in_flight = 1
    """Requests one ``run`` call has in flight (a benchmark divides its time by them)."""
    on_gpu = False
    """Inputs live on a CUDA device: host preprocessing can run there too."""

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        self.artifact, self.options = artifact, options
        self.label = self.name
        self.preprocessing = artifact.meta.get("preprocessing")
        self.postprocess = artifact.meta.get("postprocess") or "none"
        self.precision = artifact.meta.get("precision", "fp32")
        self.exec_precision = self.precision
        """The precision that actually runs (OpenVINO may pick bf16)."""

    @classmethod
    def opens(cls, artifact: Artifact) -> bool:
        return artifact.kind in cls.kinds

    @classmethod
    def needs_gpu(cls, options: RuntimeOptions) -> bool:
        """Whether opening an artifact with these options takes a CUDA GPU."""
        return "cpu" not in cls.devices

    @classmethod
    def preflight(cls, options: RuntimeOptions) -> list[str]:
        """Problems these options would meet on this machine, found before anything runs."""
        return []

    @property
    def composed(self) -> bool:
        """Preprocessing is baked into the graph: the input is raw pixels."""
        return self.preprocessing is not None

    def prepare_image(self, image: Any) -> Any:
        """A composed model with a fixed input size gets the photo resized to that size first;
        the reference then sees the same resized photo, so only the graph's own work differs."""
        return fit_fixed_size(image, self.preprocessing)

    def raw_input(self, image: Any) -> Any:
        """The image as the composed graph's input: layout, dtype and channel order."""
        return raw_pixels(image, self.preprocessing)

    def forward(self, batch: Any) -> list[Any]:
        """Outputs of one batch as host arrays, in the model's output order."""
        raise NotImplementedError

    def run(self, batch: Any) -> Any:
        """The call a benchmark times; outputs may stay where the runtime put them."""
        return self.forward(batch)

    def size_bytes(self) -> int:
        return artifact_bytes(self.artifact)


class TorchCallable(Runtime):
    """An artifact that loads as a torch callable (TorchScript, an AOTInductor package): torch's
    threads pinned, numpy in, float32 arrays out. A subclass says how to ``load`` it."""

    tools: ClassVar[tuple[str, ...]] = ("torch",)
    # such artifacts have no output names: the ONNX export's default keeps parity tables alike
    output_names = ["output"]

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import torch

        super().__init__(artifact, options)
        if options.threads:
            torch.set_num_threads(options.threads)
        self._torch = torch
        self.module = self.load(artifact)

    def load(self, artifact: Artifact) -> Any:
        raise NotImplementedError

    def forward(self, batch: Any) -> list[Any]:
        from edgepipe.models.torch_model import forward_numpy

        return forward_numpy(self.module, batch)

    def run(self, batch: Any) -> Any:
        with self._torch.inference_mode():
            return self.module(self._torch.from_numpy(batch))


_RUNTIMES: list[type[Runtime]] = []


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a runtime available to every stage that runs artifacts."""
    if any(known.name == cls.name for known in _RUNTIMES):
        raise ValueError(f"runtime {cls.name!r} registered twice")
    _RUNTIMES.append(cls)
    _RUNTIMES.sort(key=lambda runtime: -runtime.priority)  # stable: ties keep their order
    return cls


def registered_runtimes() -> tuple[type[Runtime], ...]:
    return tuple(_RUNTIMES)


def runnable_kinds() -> tuple[ArtifactKind, ...]:
    """Artifact kinds some runtime opens, in ArtifactKind's order."""
    opened = {kind for runtime in _RUNTIMES for kind in runtime.kinds}
    return tuple(kind for kind in ArtifactKind if kind in opened)


def runtime_for(artifact: Artifact) -> type[Runtime]:
    """The runtime that opens ``artifact``."""
    for runtime in _RUNTIMES:
        if runtime.opens(artifact):
            return runtime
    raise StageError(f"no runtime opens a {artifact.kind.value} artifact ({artifact.stage_id})")


def open_runtime(artifact: Artifact, options: RuntimeOptions | None = None) -> Runtime:
    """``artifact`` opened in its runtime, ready to run."""
    return runtime_for(artifact)(artifact, options or RuntimeOptions())


def preflight_problems(options: RuntimeOptions) -> list[str]:
    """What every runtime says about these options on this machine."""
    return [problem for runtime in _RUNTIMES for problem in runtime.preflight(options)]
