"""The ``quantize`` stage type: INT8 (ONNX Runtime static/dynamic, OpenVINO NNCF, PyTorch PT2E)
or FP16.

``stage`` (spec and stage), ``options`` (per back end settings), ``calibration`` (samples,
readers), ``ort_backend``, ``nncf_backend`` and ``torch_backend`` (the three quantizers),
``network_split`` (composed models quantize their network only), ``target``/``recovery`` (an
accuracy target and the ladder that recovers it), and the per-backend ``*_sensitivity``
searches.
"""

from edgepipe.stages.quantize.stage import QuantizeSpec, QuantizeStage

__all__ = ["QuantizeSpec", "QuantizeStage"]
