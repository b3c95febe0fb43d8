"""The ``build-trt-cache`` stage type: TensorRT engines for an ONNX model, on this GPU.

``stage`` (spec, profiles, provider options, the stage) and ``engines`` (building them through
ONNX Runtime or TensorRT's own builder, and the EP-context wrapper).
"""

from edgepipe.stages.build_trt_cache.stage import (
    BuildTrtCacheSpec,
    BuildTrtCacheStage,
    derive_profile,
    trt_provider_options,
)

__all__ = ["BuildTrtCacheSpec", "BuildTrtCacheStage", "derive_profile", "trt_provider_options"]
