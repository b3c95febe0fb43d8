"""build-trt-cache, GPU discovery and the CUDA IO helpers.

Most tests run anywhere: provider options, default profiles, cache keys, preflight messages,
the EP-context wrapper, IO binding on the CPU provider and the preprocessing maths. Tests marked
``gpu`` build real engines and skip, saying what is missing, where there is no NVIDIA GPU with
onnxruntime-gpu and TensorRT.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgepipe import gpu
from edgepipe.errors import StageError
from edgepipe.stages import get_stage
from edgepipe.stages.build_trt_cache import BuildTrtCacheSpec, derive_profile, trt_provider_options

_PROBLEMS = gpu.gpu_problems(need_tensorrt=True)
needs_gpu = pytest.mark.skipif(bool(_PROBLEMS), reason="no TensorRT GPU: " + "; ".join(_PROBLEMS))
cpu_only = pytest.mark.skipif(not _PROBLEMS, reason="this machine can run TensorRT")
# CuPy preprocessing needs a GPU and CuPy, not ONNX Runtime's GPU build or TensorRT
needs_cuda_device = pytest.mark.skipif(
    not gpu.list_gpus(), reason="no NVIDIA GPU/driver (nvidia-smi lists none)"
)
PROFILE = {"input": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [8, 3, 224, 224]}}
FAKE_GPU = {
    "name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0",
    "driver": "550.54.15",
    "cuda_driver": "12.4",
    "cuda_runtime": "12.4",
    "tensorrt": "10.3.0",
}


def spec(**fields) -> BuildTrtCacheSpec:
    return BuildTrtCacheSpec(type="build-trt-cache", input="onnx", **fields)


# --- provider options -------------------------------------------------------------------------


def test_default_options_dump_an_ep_context_model(tmp_path):
    assert trt_provider_options(spec(), tmp_path, PROFILE) == {
        "device_id": "0",
        "trt_fp16_enable": "True",
        "trt_int8_enable": "False",
        "trt_builder_optimization_level": "3",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "trt_engines",  # relative: resolved against the context model
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path / "trt_timing"),
        "trt_profile_min_shapes": "input:1x3x224x224",
        "trt_profile_opt_shapes": "input:1x3x224x224",
        "trt_profile_max_shapes": "input:8x3x224x224",
        "trt_dump_ep_context_model": "True",
        "trt_ep_context_file_path": str(tmp_path / "model_ctx.onnx"),
        "trt_ep_context_embed_mode": "0",
    }


def test_int8_options_with_a_table_and_no_ep_context(tmp_path):
    chosen = spec(
        fp16=False,
        int8=True,
        calibration_table=Path("calib/calibration.flatbuffers"),
        max_workspace_size=2 << 30,
        builder_optimization_level=5,
        timing_cache=False,
        device_id=1,
        ep_context=False,
    )
    assert trt_provider_options(chosen, tmp_path) == {
        "device_id": "1",
        "trt_fp16_enable": "False",
        "trt_int8_enable": "True",
        "trt_builder_optimization_level": "5",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path / "trt_engines"),
        "trt_timing_cache_enable": "False",
        "trt_max_workspace_size": str(2 << 30),
        "trt_int8_calibration_table_name": "calibration.flatbuffers",
    }


def test_profiles_of_several_inputs_are_comma_joined(tmp_path):
    profiles = {
        "image": {"min": [1, 64, 64, 3], "opt": [1, 480, 640, 3], "max": [4, 2048, 2048, 3]},
        "mask": {"min": [1, 1], "opt": [1, 1], "max": [4, 1]},
    }
    options = trt_provider_options(spec(), tmp_path, profiles)
    assert options["trt_profile_min_shapes"] == "image:1x64x64x3,mask:1x1"
    assert options["trt_profile_opt_shapes"] == "image:1x480x640x3,mask:1x1"
    assert options["trt_profile_max_shapes"] == "image:4x2048x2048x3,mask:4x1"


def test_spec_refuses_inconsistent_settings():
    with pytest.raises(ValidationError, match="applies only with int8"):
        spec(calibration_table=Path("t.flatbuffers"))
    with pytest.raises(ValidationError, match="QDQ models only"):
        spec(engine="native", int8=True, calibration_table=Path("t.flatbuffers"))
    with pytest.raises(ValidationError, match="engine: native needs ep_context: true"):
        spec(engine="native", ep_context=False)
    with pytest.raises(ValidationError, match="min <= opt <= max"):
        spec(profiles={"input": {"min": [2, 3], "opt": [1, 3], "max": [4, 3]}})
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        spec(builder_optimization_level=6)


# --- default profiles -------------------------------------------------------------------------


def test_profile_for_a_dynamic_batch():
    inputs = [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224]}]
    assert derive_profile(inputs, {"input_size": [3, 224, 224]}, max_batch=8) == PROFILE


def test_profile_for_dynamic_batch_height_and_width():
    inputs = [{"name": "x", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}]
    profile = derive_profile(inputs, {"input_size": [3, 256, 192]}, 4, hw_range=(64, 1024))
    assert profile == {
        "x": {"min": [1, 3, 64, 64], "opt": [1, 3, 256, 192], "max": [4, 3, 1024, 1024]}
    }


def test_profile_for_a_composed_nhwc_image_clamps_opt_into_the_range():
    inputs = [{"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 3]}]
    profile = derive_profile(inputs, {"input_size": [3, 32, 32]}, 2, hw_range=(64, 2048))
    assert profile == {
        "image": {"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3], "max": [2, 2048, 2048, 3]}
    }


def test_static_models_need_no_profile_and_unknown_axes_need_one():
    static = [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}]
    assert derive_profile(static, None, 8) == {}
    tokens = [{"name": "ids", "dtype": "int64", "shape": ["batch", "sequence"]}]
    with pytest.raises(StageError, match="'ids' dimension 1 .*set `profiles`"):
        derive_profile(tokens, None, 8)


# --- cache key and discovery ------------------------------------------------------------------


def test_cache_key_carries_the_gpu_fingerprint(monkeypatch):
    from edgepipe.cache import action_key
    from edgepipe.key_documents import explain, key_document

    stage, chosen = get_stage("build-trt-cache"), spec(device_id=1)
    asked = []

    def key(fingerprint):
        def fake(device_id=0):
            asked.append(device_id)
            return dict(fingerprint)

        monkeypatch.setattr(gpu, "gpu_fingerprint", fake)
        tools = {"onnx": "1.17.0", "onnxruntime-gpu": "1.20.1"}
        return key_document(stage, chosen, ["sha256:ab"], {}, tools, stage.key_extra(chosen))

    document = key(FAKE_GPU)
    assert document["extra"] == {"gpu": FAKE_GPU} and asked == [1]
    for field in FAKE_GPU:  # every fact of the fingerprint changes the key
        assert action_key(key({**FAKE_GPU, field: "other"})) != action_key(document), field
    other = key({**FAKE_GPU, "name": "NVIDIA L4", "compute_capability": "8.9"})
    assert "gpu.name: 'NVIDIA H100 80GB HBM3' → 'NVIDIA L4'" in explain(document, other, ["onnx"])


def test_fingerprint_from_a_fake_nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text(
        textwrap.dedent("""\
        #!/bin/sh
        case "$1" in
          --query-gpu=*)
            echo 'NVIDIA L4, 8.9, 550.54.15, GPU-aaa'
            echo 'NVIDIA H100 80GB HBM3, 9.0, 550.54.15, GPU-bbb' ;;
          *) echo '| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4 |' ;;
        esac
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu._smi.cache_clear(), gpu._driver_cuda_version.cache_clear()
    try:
        first = gpu.gpu_fingerprint(0)
        assert first["name"] == "NVIDIA L4" and first["compute_capability"] == "8.9"
        assert first["driver"] == "550.54.15" and first["cuda_driver"] == "12.4"
        assert first["cuda_runtime"] == gpu.onnxruntime_build()["cuda_version"]
        assert gpu.gpu_fingerprint(1)["name"] == "NVIDIA H100 80GB HBM3"
        assert gpu.gpu_fingerprint(2) is None
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")  # CUDA's device 0 is the H100
        assert gpu.gpu_fingerprint(0)["name"] == "NVIDIA H100 80GB HBM3"
        assert "device_id 1 does not exist" in " ".join(gpu.gpu_problems(False, device_id=1))
    finally:
        gpu._smi.cache_clear(), gpu._driver_cuda_version.cache_clear()


def test_onnxruntime_build_is_read_without_importing_it():
    import onnxruntime

    build = gpu.onnxruntime_build()
    assert build["version"] == onnxruntime.__version__
    assert build["package"] in ("onnxruntime", "onnxruntime-gpu")
    assert (build["cuda_version"] is not None) == (build["package"] == "onnxruntime-gpu")


@cpu_only
def test_problems_on_a_machine_without_gpu_say_what_to_install():
    text = "\n".join(gpu.gpu_problems(need_tensorrt=True))
    assert "nvidia-smi" in text or "CUDAExecutionProvider" in text or "TensorRT" in text
    if gpu.onnxruntime_build()["package"] == "onnxruntime":
        assert "pip uninstall onnxruntime && pip install onnxruntime-gpu" in text
    assert not gpu.gpu_available(need_tensorrt=True)


RECIPE = """
version: 1
name: trt
stages:
  model: {type: load, source: onnx, path: model.onnx}
  simple: {type: simplify, input: model, check_n: 0}
  trt: {type: build-trt-cache, input: simple, max_batch: 4}
"""


@cpu_only
def test_run_stops_before_anything_runs_and_the_cpu_part_still_runs(workspace):
    tiny_onnx(workspace.root)
    recipe = workspace.recipe(RECIPE)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 4, result.stderr
    assert "nothing was started" in result.stderr and "Traceback" not in result.stderr
    assert "stage 'trt' (build-trt-cache)" in result.stderr
    assert "nvidia-smi" in result.stderr or "CUDAExecutionProvider" in result.stderr
    assert not workspace.out.exists()

    planned = workspace.cli("plan", str(recipe))
    assert planned.returncode == 0, planned.stderr
    assert "build-trt-cache" in planned.stdout

    until = workspace.cli("run", str(recipe), "--until", "simple")
    assert until.returncode == 0, until.stderr
    assert (workspace.out / "simple" / "model.onnx").is_file()
    assert not (workspace.out / "trt").exists()


def test_without_tensorrt_the_stage_fails_with_what_is_missing(tmp_path):
    if not _PROBLEMS:
        pytest.skip("this machine can run TensorRT")
    with pytest.raises(StageError, match="lacks TensorrtExecutionProvider|did not load|could not"):
        build(tmp_path)
    assert (tmp_path / "out" / "model.onnx").is_file()  # copied before the build was tried


# --- CPU-checkable helpers --------------------------------------------------------------------


def tiny_onnx(folder: Path, dynamic_batch: bool = True) -> Path:
    """A small conv net exported with the TorchScript exporter (no network, no GPU)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    path = folder / "model.onnx"
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        net,
        (torch.randn(2, 3, 32, 32),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes=axes,
    )
    return path


def test_ep_context_wrapper_of_a_plan(tmp_path):
    import onnx

    from edgepipe.models.onnx_io import describe_onnx
    from edgepipe.stages.build_trt_cache.engines import wrap_plan

    model = tiny_onnx(tmp_path)
    (tmp_path / "model.plan").write_bytes(b"not a real engine")
    wrap_plan(tmp_path / "model.plan", model, describe_onnx(model))
    wrapper, source = onnx.load(str(tmp_path / "model_ctx.onnx")), onnx.load(str(model))
    (node,) = wrapper.graph.node
    assert (node.op_type, node.domain) == ("EPContext", "com.microsoft")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes == {"embed_mode": 0, "ep_cache_context": b"model.plan"}
    assert wrapper.graph.input == source.graph.input and wrapper.graph.output == source.graph.output
    assert wrapper.ir_version == source.ir_version
    opsets = {o.domain: o.version for o in wrapper.opset_import}
    assert opsets == {"": 17, "com.microsoft": 1}


def test_io_binding_runner_on_the_cpu_provider(tmp_path):
    import onnxruntime as ort

    from edgepipe.runtimes.cuda_sessions import IoBindingRunner

    session = ort.InferenceSession(str(tiny_onnx(tmp_path)), providers=["CPUExecutionProvider"])
    batches = [np.random.default_rng(i).standard_normal((2, 3, 32, 32), np.float32) for i in (0, 1)]
    runner = IoBindingRunner(session, "cpu", 0)
    for batch in [*batches, *batches]:  # the second round reuses the uploaded values
        runner.run(batch)
        np.testing.assert_allclose(runner.outputs()[0], session.run(None, {"input": batch})[0])
    assert len(runner._held) == 2


CONFIGS = [
    {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875},
    {"input_size": (3, 160, 160), "interpolation": "bilinear", "crop_pct": 0.95},
    {"input_size": (3, 256, 192), "interpolation": "bicubic", "crop_pct": 1.0},
    {"input_size": (3, 96, 96), "interpolation": "nearest", "crop_mode": "squash"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["interpolation"])
def test_matrix_preprocessing_equals_timms_pil_transform(config):
    from edgepipe.imaging.gpu_preprocessing import TimmPreprocessor
    from edgepipe.imaging.samples import load_images
    from edgepipe.imaging.timm_eval import timm_eval_transform

    config = {**config, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    reference, ours = timm_eval_transform(config), TimmPreprocessor(config)
    for name, image in load_images(None, 4):
        expected = reference(image).unsqueeze(0).numpy()
        np.testing.assert_array_equal(ours(np.asarray(image)), expected, err_msg=name)


# --- on a GPU ---------------------------------------------------------------------------------


def build(tmp_path: Path, **fields):
    """Run the stage in this process on a tiny exported model; returns the output artifact."""
    from edgepipe.models.onnx_io import describe_onnx
    from edgepipe.stages.base import Artifact, ArtifactKind, StageContext

    source = tmp_path / "source"
    source.mkdir()
    model = tiny_onnx(source)
    meta = {**describe_onnx(model), "data_config": {"input_size": [3, 32, 32]}}
    inputs = [Artifact(ArtifactKind.ONNX_MODEL, source, meta, "onnx")]
    out = tmp_path / "out"
    out.mkdir()
    ctx = StageContext("trt", tmp_path, inputs, out, logging.getLogger("test"))
    meta = get_stage("build-trt-cache").run(spec(max_batch=4, **fields), ctx)
    return Artifact(ArtifactKind.ONNX_MODEL, out, meta, "trt"), model


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fields", [{}, {"ep_context": False}], ids=["ep-context", "engine-cache"])
def test_fp16_engine_matches_onnxruntime_cpu(tmp_path, fields):
    import onnxruntime as ort

    from edgepipe.runtimes import open_runtime

    artifact, model = build(tmp_path, **fields)
    assert artifact.meta["precision"] == "fp16" and any(
        (tmp_path / "out/trt_engines").glob("*.engine")
    )
    assert (artifact.meta["trt"]["ep_context_model"] is None) == ("ep_context" in fields)
    cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    candidate = open_runtime(artifact)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), np.float32)
        assert cosine(candidate.forward(x)[0], cpu.run(None, {"input": x})[0]) > 0.999


@pytest.mark.gpu
@needs_gpu
def test_io_binding_run_on_the_gpu(tmp_path):
    from edgepipe.runtimes.cuda_sessions import IoBindingRunner, open_gpu_session

    artifact, _ = build(tmp_path)
    session, _keepalive = open_gpu_session(artifact.path, artifact.meta)
    runner = IoBindingRunner(session, "cuda", 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), np.float32)
    for _ in range(3):
        runner.run(x)
    np.testing.assert_allclose(runner.outputs()[0], session.run(None, {"input": x})[0], atol=1e-3)


@pytest.mark.gpu
@needs_gpu
def test_native_plan_runs_through_its_ep_context_wrapper(tmp_path):
    pytest.importorskip("tensorrt", reason="engine: native needs the tensorrt Python package")
    from edgepipe.runtimes import open_runtime

    artifact, _ = build(tmp_path, engine="native")
    assert (tmp_path / "out/model.plan").stat().st_size > 0
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), np.float32)
    assert open_runtime(artifact).forward(x)[0].shape == (2, 10)


@pytest.mark.gpu
@needs_cuda_device
def test_cupy_preprocessing_matches_numpy():
    pytest.importorskip("cupy", reason="GPU preprocessing needs CuPy (cupy-cuda12x/13x)")
    import cupy

    from edgepipe.imaging.gpu_preprocessing import TimmPreprocessor
    from edgepipe.imaging.samples import load_images

    config = {**CONFIGS[0], "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    on_host, on_gpu = TimmPreprocessor(config), TimmPreprocessor(config, device_id=0)
    for _, image in load_images(None, 3):
        np.testing.assert_array_equal(
            cupy.asnumpy(on_gpu(np.asarray(image))), on_host(np.asarray(image))
        )


@pytest.mark.gpu
@needs_gpu
def test_gpu_benchmark_rows_count_cupy_preprocessing(workspace):
    pytest.importorskip("cupy", reason="GPU preprocessing needs cupy-cuda12x")
    recipe = workspace.recipe("""
        version: 1
        name: gpu-bench
        stages:
          model: {type: load, name: test_resnet}
          onnx: {type: export, input: model, exporter: torchscript}
          bench: {type: benchmark, inputs: [onnx], max_seconds: 2,
                  onnxruntime_providers: [CUDAExecutionProvider, CPUExecutionProvider]}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace.out / "bench" / "benchmark.json").read_text())
    (onnx,) = [r for r in report["rows"] if r["label"] == "onnx"]
    assert onnx["host_preprocessing"] == "cupy" and report["gpu_preprocess_ms"] > 0
    assert onnx["e2e_p50_ms"] == pytest.approx(onnx["p50_ms"] + report["gpu_preprocess_ms"])
    assert report["environment"]["gpu"]["name"]
