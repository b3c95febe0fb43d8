"""OpenVINO: an IR compiled for a device, with one request (latency) or a queue of them
(throughput hint: OpenVINO's optimal number of requests in flight)."""

from __future__ import annotations

__all__ = ["IR_FILE", "OpenVinoRuntime"]

from typing import Any

from edgepipe.artifacts import Artifact, ArtifactKind
from edgepipe.runtimes.base import Runtime, RuntimeOptions, register_runtime

IR_FILE = "model.xml"


@register_runtime
class OpenVinoRuntime(Runtime):
    name = "openvino"
    kinds = (ArtifactKind.OPENVINO_IR,)
    summary = "compiled for a device; f32 for verification, hints for timing"
    devices = ("cpu", "gpu", "npu")
    tools = ("openvino",)

    def __init__(self, artifact: Artifact, options: RuntimeOptions):
        import openvino as ov

        super().__init__(artifact, options)
        settings = options.openvino
        config: dict[str, Any] = {}
        if settings.hint:
            config["PERFORMANCE_HINT"] = settings.hint.upper()
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if settings.precision:
            config["INFERENCE_PRECISION_HINT"] = settings.precision
        ir = artifact.path / artifact.meta.get("model_file", IR_FILE)
        self.compiled = ov.Core().compile_model(str(ir), settings.device, config)
        # MEASUREMENTS #4: on AMX CPUs the default runs bf16; reports must say what ran
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.exec_precision = getattr(hint, "get_type_name", lambda: str(hint))()
        self.label = f"openvino {settings.device}" + (f" {settings.hint}" if settings.hint else "")
        self.output_names = [
            p.get_any_name() if p.get_names() else f"output{i}"
            for i, p in enumerate(self.compiled.outputs)
        ]
        self.request = self.compiled.create_infer_request()
        self.queue = None
        if settings.hint == "throughput":
            # the hint splits the device into streams: only concurrent requests fill them all
            self.in_flight = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(self.compiled, self.in_flight)

    def forward(self, batch: Any) -> list[Any]:
        """One array per output, in the IR's order; any batch size if the IR's batch is dynamic."""
        import numpy as np

        self.request.infer({0: batch})
        # the request's output tensors are reused by the next infer(): copy them out
        return [
            np.array(self.request.get_output_tensor(i).data) for i in range(len(self.output_names))
        ]

    def run(self, batch: Any) -> Any:
        if self.queue is None:
            return self.request.infer({0: batch})
        for _ in range(self.in_flight):
            self.queue.start_async({0: batch})
        self.queue.wait_all()
        return None
