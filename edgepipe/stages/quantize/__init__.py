"""The ``quantize`` stage type: INT8 (ONNX Runtime static/dynamic, OpenVINO NNCF) or FP16.

``stage`` (spec and stage), ``calibration`` (samples, readers), ``ort_backend`` and
``nncf_backend`` (the two quantizers), ``network_split`` (composed models quantize their network
only), ``target``/``recovery`` (an accuracy target and the ladder that recovers it), and the
per-backend ``*_sensitivity`` searches.
"""

from edgepipe.stages.quantize.stage import QuantizeSpec, QuantizeStage

__all__ = ["QuantizeSpec", "QuantizeStage"]
