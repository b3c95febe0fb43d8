"""Building TensorRT engines: through ONNX Runtime's TensorRT provider (run at each profile
shape, the engine lands in the cache folder), or natively with TensorRT's builder (a plan wrapped
in an EP-context model). Only ``build-trt-cache`` builds; running engines is the runtimes' job
(runtimes/tensorrt.py, runtimes/cuda_sessions.py)."""

from __future__ import annotations

__all__ = ["build_engines", "build_native", "check_int8", "wrap_plan"]

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.errors import StageError
from edgepipe.models.onnx_io import ONNX_FILE
from edgepipe.runtimes.cuda_sessions import cuda_session, open_gpu_session

if TYPE_CHECKING:
    from edgepipe.stages.build_trt_cache.stage import BuildTrtCacheSpec

PLAN_FILE = "model.plan"
TIMING_DIR = "trt_timing"
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}


def check_int8(spec: BuildTrtCacheSpec, model: Path) -> None:
    """INT8 needs scales: Q/DQ nodes, or a calibration table (TensorRT refuses both at once)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    if spec.int8 and not qdq and spec.calibration_table is None:
        raise StageError("int8 needs a QDQ model (quantize stage) or calibration_table")
    if qdq and spec.calibration_table is not None:
        raise StageError("the model has Q/DQ nodes: TensorRT refuses a calibration table for it")


def build_native(spec: BuildTrtCacheSpec, out: Path, profiles: dict, meta: dict) -> None:
    """model.plan from TensorRT's builder (Builder, OnnxParser, IBuilderConfig, profiles)."""
    import tensorrt as trt

    if spec.device_id:  # TensorRT builds on the calling thread's current CUDA device
        import cupy

        cupy.cuda.Device(spec.device_id).use()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(out / ONNX_FILE)):  # reads external data beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StageError(f"TensorRT's ONNX parser rejected the model: {errors[:600]}")
    config = builder.create_builder_config()
    if spec.max_workspace_size:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.max_workspace_size)
    config.builder_optimization_level = spec.builder_optimization_level
    for wanted, flag in ((spec.fp16, trt.BuilderFlag.FP16), (spec.int8, trt.BuilderFlag.INT8)):
        if wanted:
            config.set_flag(flag)
    if profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in profiles.items():
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    if spec.timing_cache:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageError("TensorRT could not build an engine (its log above says why)")
    (out / PLAN_FILE).write_bytes(bytes(serialized))
    if spec.timing_cache:
        timing = config.get_timing_cache().serialize()
        (out / TIMING_DIR / "timing.cache").write_bytes(bytes(timing))
    if spec.ep_context:
        wrap_plan(out / PLAN_FILE, out / ONNX_FILE, meta)


def _profile_feeds(session: Any, profiles: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Seeded random inputs at each profile's min, opt and max shape (fixed inputs as they are)."""
    import numpy as np

    rng = np.random.default_rng(0)
    feeds: dict[str, dict[str, Any]] = {}
    for which in ("min", "opt", "max"):
        feeds[which] = {}
        for value in session.get_inputs():
            shape = profiles[value.name][which] if value.name in profiles else value.shape
            dtype = np.dtype(_ORT_DTYPES.get(value.type, "float32"))
            draw = rng.integers(0, 256, shape) if dtype.kind in "ui" else rng.standard_normal(shape)
            feeds[which][value.name] = draw.astype(dtype)
    return feeds


def build_engines(model: Path, trt_options: dict[str, str], profiles: dict, log: Any) -> None:
    """Run ``model`` on TensorRT at each profile shape, building the engine into the cache
    ``trt_options`` names; reopen a dumped EP-context model as consumers will: same outputs?"""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = cuda_session(model, options, trt_options, trt_options["device_id"])
    feeds = _profile_feeds(session, profiles)
    for which in ("min", "opt", "max"):  # the first run at a shape builds what it needs
        outputs = session.run(None, feeds[which])
        log.info("ran at the %s shapes %s", which, {k: v.shape for k, v in feeds[which].items()})
        if not all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in outputs):
            fp16 = trt_options.get("trt_fp16_enable") == "True"
            hint = ": FP16 overflows in this model, set fp16: false" if fp16 else ""
            raise StageError(f"the engine computed NaN/inf at the {which} shapes{hint}")
    del session
    ctx_file = Path(trt_options.get("trt_ep_context_file_path", ""))
    if ctx_file.is_file():
        meta = {"trt": {"ep_context_model": ctx_file.name, "device_id": trt_options["device_id"]}}
        reloaded, _ = open_gpu_session(model.parent, meta)
        for got, want in zip(reloaded.run(None, feeds["max"]), outputs, strict=True):
            if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
                gap = float(np.abs(got - want).max())
                raise StageError(f"the EP-context model differs by {gap:.3g}: ep_context: false")


def wrap_plan(plan: Path, model: Path, meta: dict[str, Any]) -> None:
    """``model_ctx.onnx`` around a TensorRT plan, as ORT's gen_trt_engine_wrapper_onnx_model.py
    writes it; inputs and outputs are those of the ONNX model the plan was parsed from."""
    import numpy as np
    import onnx
    from onnx import helper

    def value(v: dict[str, Any]) -> Any:
        dtype = helper.np_dtype_to_tensor_dtype(np.dtype(v["dtype"]))
        return helper.make_tensor_value_info(v["name"], dtype, v["shape"])

    ins, outs = [value(v) for v in meta["inputs"]], [value(v) for v in meta["outputs"]]
    # embed_mode 0: ep_cache_context is the plan's path, relative to the context model
    attrs = {"domain": "com.microsoft", "embed_mode": 0, "ep_cache_context": plan.name}
    node = helper.make_node("EPContext", [i.name for i in ins], [o.name for o in outs], **attrs)
    source = onnx.load(str(model), load_external_data=False)  # its IR/opset: ORT accepts those
    ops = [o for o in source.opset_import if o.domain != "com.microsoft"]
    ops.append(helper.make_opsetid("com.microsoft", 1))
    graph = helper.make_graph([node], "trt_engine_wrapper", ins, outs)
    wrapper = helper.make_model(graph, opset_imports=ops, ir_version=source.ir_version)
    onnx.save(wrapper, str(plan.parent / "model_ctx.onnx"))
