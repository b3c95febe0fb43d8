"""The runtime registry: one runtime per artifact kind (TensorRT artifacts before plain ONNX),
opened the same way by verification and the benchmark, on a trained model's real artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Workspace

from edgepipe.artifacts import Artifact, ArtifactKind, artifact_bytes
from edgepipe.errors import StageError
from edgepipe.runtimes import (
    OpenVinoOptions,
    Runtime,
    RuntimeOptions,
    open_runtime,
    preflight_problems,
    registered_runtimes,
    runnable_kinds,
    runtime_for,
)
from edgepipe.runtimes.base import _RUNTIMES, register_runtime
from edgepipe.runtimes.torch_eager import open_reference, run_on_image
from edgepipe.stages import get_stage

STAGES = {"onnx": "export", "ir": "convert-openvino", "script": "export-torchscript"}


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory):
    """The trained digits model, exported to ONNX, OpenVINO IR and TorchScript."""
    workspace = Workspace(tmp_path_factory.mktemp("runtimes"))
    lines = [f"  {sid}: {{type: {kind}, input: model}}" for sid, kind in STAGES.items()]
    text = "\n".join(["version: 1", "name: runtimes", "stages:", digits.load_stage(), *lines])
    result = workspace.cli("run", str(workspace.recipe(text + "\n")), "--no-lock")
    assert result.returncode == 0, result.stderr
    return workspace, digits


def artifact(workspace: Workspace, stage_id: str) -> Artifact:
    return Artifact.read(workspace.out / stage_id, stage_id)


def held_out(digits, count: int = 24):
    """Held-out digits, spread over the classes."""
    from PIL import Image

    paths = sorted(digits.val.rglob("*.png"))
    return [Image.open(path).convert("RGB") for path in paths[:: len(paths) // count][:count]]


def test_each_kind_has_its_runtime_and_stages_accept_what_runtimes_open():
    assert runnable_kinds() == (
        ArtifactKind.TORCH_MODEL,
        ArtifactKind.ONNX_MODEL,
        ArtifactKind.OPENVINO_IR,
        ArtifactKind.TORCHSCRIPT,
        ArtifactKind.TFLITE_MODEL,
        ArtifactKind.AOTI_PACKAGE,
        ArtifactKind.EXECUTORCH_PROGRAM,
    )
    names = {
        kind: runtime_for(Artifact(kind, Path("."), {}, "x")).name for kind in runnable_kinds()
    }
    assert names == {
        ArtifactKind.TORCH_MODEL: "torch eager",
        ArtifactKind.ONNX_MODEL: "onnxruntime",
        ArtifactKind.OPENVINO_IR: "openvino",
        ArtifactKind.TORCHSCRIPT: "torchscript",
        ArtifactKind.TFLITE_MODEL: "tflite",
        ArtifactKind.AOTI_PACKAGE: "aoti",
        ArtifactKind.EXECUTORCH_PROGRAM: "executorch",
    }
    engines = Artifact(
        ArtifactKind.ONNX_MODEL,
        Path("."),
        {"execution_provider": "TensorrtExecutionProvider"},
        "trt",
    )
    assert runtime_for(engines).name == "onnxruntime-tensorrt"
    assert runtime_for(engines).needs_gpu(RuntimeOptions())
    with pytest.raises(StageError, match="no runtime opens a report artifact"):
        runtime_for(Artifact(ArtifactKind.REPORT, Path("."), {}, "parity"))
    # verification checks any runnable artifact against a torch model; the benchmark times all
    assert get_stage("parity").accepted_kinds("input") == runnable_kinds()[1:]
    assert get_stage("evaluate").accepted_kinds("input") == runnable_kinds()[1:]
    assert get_stage("benchmark").accepted_kinds("inputs") == (
        *runnable_kinds(),
        ArtifactKind.REPORT,
    )


def test_a_new_runtime_is_one_registered_class():
    @register_runtime
    class Quantised(Runtime):  # e.g. an ONNX model for a vendor's runtime, by its metadata
        name = "vendor-onnx"
        kinds = (ArtifactKind.ONNX_MODEL,)
        priority = 5

        @classmethod
        def opens(cls, artifact):
            return artifact.meta.get("vendor") is True

        @classmethod
        def preflight(cls, options):
            return ["vendor SDK missing"]

    try:
        vendor = Artifact(ArtifactKind.ONNX_MODEL, Path("."), {"vendor": True}, "v")
        plain = Artifact(ArtifactKind.ONNX_MODEL, Path("."), {}, "p")
        assert runtime_for(vendor) is Quantised and runtime_for(plain).name == "onnxruntime"
        assert "vendor SDK missing" in preflight_problems(RuntimeOptions())
        with pytest.raises(ValueError, match="registered twice"):
            register_runtime(Quantised)
    finally:
        _RUNTIMES.remove(Quantised)
    assert Quantised not in registered_runtimes()


def test_the_cli_lists_every_runtime(tmp_path):
    listed = Workspace(tmp_path).cli("runtimes")
    assert listed.returncode == 0, listed.stderr
    for runtime in registered_runtimes():
        assert runtime.name in listed.stdout and runtime.summary[:30] in listed.stdout


def test_gpu_options_are_found_missing_before_anything_runs():
    assert preflight_problems(RuntimeOptions()) == []
    cuda = RuntimeOptions(onnxruntime_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert runtime_for(Artifact(ArtifactKind.ONNX_MODEL, Path("."), {}, "x")).needs_gpu(cuda)
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: nothing is missing")
    assert any("CUDA" in problem or "GPU" in problem for problem in preflight_problems(cuda))


@pytest.mark.slow
def test_every_runtime_agrees_with_torch_on_a_trained_model(built):
    workspace, digits = built
    reference = open_reference(artifact(workspace, "model"), workspace.root)
    images = held_out(digits)
    for stage_id in STAGES:
        runtime = open_runtime(artifact(workspace, stage_id))
        assert runtime.size_bytes() == artifact_bytes(runtime.artifact) > 0
        agree, worst = 0, 1.0
        for image in images:
            expected, got = run_on_image(reference, runtime, image)
            assert got[0].shape == expected[0].shape == (1, 10), stage_id
            a, b = expected[0].ravel(), got[0].ravel()
            worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
            agree += int(a.argmax() == b.argmax())
        assert agree == len(images) and worst > 0.9999, (stage_id, agree, worst)


@pytest.mark.slow
def test_the_benchmark_opens_the_same_artifacts_with_its_own_settings(built):
    workspace, _ = built
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    # verification: OpenVINO in true fp32 (not the bf16 default of AMX CPUs), library threads
    checked = open_runtime(artifact(workspace, "ir"))
    assert (checked.label, checked.exec_precision, checked.in_flight) == ("openvino CPU", "f32", 1)
    timed_options = RuntimeOptions(
        threads=1,
        openvino=OpenVinoOptions(hint="throughput", precision=None),
        recipe_dir=workspace.root,
    )
    timed = open_runtime(artifact(workspace, "ir"), timed_options)
    assert timed.label == "openvino CPU throughput" and timed.in_flight >= 1
    timed.run(batch)  # the whole queue in flight
    # left to choose, OpenVINO may run bf16 (it does on this Zen 4 CPU): close, not equal
    assert timed.exec_precision in ("f32", "bf16")
    fp32, chosen = checked.forward(batch)[0], timed.forward(batch)[0]
    assert (fp32.argmax(1) == chosen.argmax(1)).all()
    np.testing.assert_allclose(fp32, chosen, atol=1e-4 if timed.exec_precision == "f32" else 0.2)
    onnx = open_runtime(artifact(workspace, "onnx"), timed_options)
    assert onnx.label == "onnxruntime CPU" and not onnx.on_gpu
    np.testing.assert_array_equal(onnx.run(batch)[0], onnx.forward(batch)[0])
    eager = open_runtime(artifact(workspace, "model"), timed_options)
    assert eager.run(batch).shape == (2, 10)


def test_onnx_runtime_names_a_provider_it_lacks(built):
    workspace, _ = built
    options = RuntimeOptions(onnxruntime_providers=("NoSuchExecutionProvider",))
    with pytest.raises(StageError, match="lacks NoSuchExecutionProvider"):
        open_runtime(artifact(workspace, "onnx"), options)
