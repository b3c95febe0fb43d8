"""convert-tflite end to end, in the real onnx2tf toolchain (built once per test session, about
a minute; shared by xdist workers through EDGEPIPE_TOOLCHAINS), on the model the suite trains
(tests/digits.py): fp32, fp16 and full-integer INT8 keep top-1 on held-out digits and pass
parity; a TFLite artifact of a broken model fails it; the TFLite rows join the benchmark."""

from __future__ import annotations

import json

import pytest
from conftest import QUICK_TIMING as QUICK
from conftest import outcomes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tflite_run(tmp_path_factory, digits):
    from conftest import Workspace

    workspace = Workspace(tmp_path_factory.mktemp("tflite"))
    calibration = f"calibration: {{images: {digits.calibration}, count: 64}}"
    lines = [
        "version: 1",
        "name: digits-tflite",
        "stages:",
        digits.load_stage(),
        digits.broken_load_stage(workspace.root),
        "  onnx: {type: export, input: model, exporter: torchscript}",
        "  broken_onnx: {type: export, input: broken, exporter: torchscript}",
        "  fp32: {type: convert-tflite, input: onnx}",
        "  fp16: {type: convert-tflite, input: onnx, precision: fp16}",
        f"  int8: {{type: convert-tflite, input: onnx, precision: int8, {calibration}}}",
        "  e2e: {type: compose-preprocessing, input: onnx}",
        "  e2e_fp32: {type: convert-tflite, input: e2e}",
        "  broken_fp32: {type: convert-tflite, input: broken_onnx}",
        "  broken_parity: {type: parity, input: broken_fp32, reference: model}",
        "  bench: {type: benchmark, inputs: [onnx, fp32, int8], batch_sizes: [1], " + QUICK + "}",
    ]
    for artifact in ("fp32", "fp16", "int8", "e2e_fp32"):
        lines.append(f"  parity_{artifact}: {{type: parity, input: {artifact}}}")
    for artifact in ("fp32", "int8"):  # fp16 and the composed model: parity only (time)
        lines.append(
            f"  eval_{artifact}: {{type: evaluate, input: {artifact}, dataset: {digits.val}}}"
        )
    recipe = workspace.recipe("\n".join(lines))
    result = workspace.cli("run", str(recipe), timeout=1200)
    return workspace, recipe, result


def _meta(workspace, stage):
    return json.loads((workspace.out / stage / "artifact.json").read_text())["meta"]


def test_every_tflite_artifact_keeps_top1_and_passes_parity(tflite_run, digits):
    workspace, _, result = tflite_run
    stages = outcomes(result.stderr)
    for artifact in ("fp32", "fp16", "int8", "e2e_fp32"):
        assert stages[artifact] == "built", result.stderr
        assert stages[f"parity_{artifact}"] == "built", result.stderr
    for artifact in ("fp32", "int8"):
        report = json.loads((workspace.out / f"eval_{artifact}" / "evaluate.json").read_text())
        assert report["images"] == 360 and digits.torch_top1 > 0.95
        assert report["top1_drop"] <= 0.01, (artifact, report)  # evaluate gates it too
    int8 = _meta(workspace, "int8")
    assert int8["precision"] == "int8" and int8["layout"] == "NHWC"
    assert int8["inputs"][0]["dtype"] == "int8" and "quantization" in int8["inputs"][0]
    assert int8["calibration"]["samples"] == 64
    assert _meta(workspace, "fp16")["precision"] == "fp16"
    assert _meta(workspace, "fp32")["inputs"][0]["shape"] == [1, 32, 32, 3]  # NHWC
    assert _meta(workspace, "fp32")["transpose_input"] is True
    composed = _meta(workspace, "e2e_fp32")
    assert composed["inputs"][0]["dtype"] == "uint8" and composed["transpose_input"] is False


def test_a_tflite_artifact_of_a_broken_model_fails_parity(tflite_run):
    workspace, _, result = tflite_run
    stages = outcomes(result.stderr)
    assert stages["broken_fp32"] == "built" and stages["broken_parity"] == "failed"
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "stage 'broken_parity' failed: parity gate failed" in message


def test_tflite_rows_join_the_benchmark(tflite_run):
    workspace, _, _ = tflite_run
    rows = json.loads((workspace.out / "bench" / "benchmark.json").read_text())["rows"]
    tflite = [row for row in rows if row["runtime"].startswith("tflite")]
    assert {row["precision"] for row in tflite} == {"fp32", "int8"}
    assert all(row["p50_ms"] > 0 for row in tflite)
    assert any(row["runtime"].startswith("onnxruntime") for row in rows)


def test_the_toolchain_pins_are_in_the_stage_key(tflite_run):
    workspace, recipe, _ = tflite_run
    document = json.loads((workspace.cache / "index" / "digits-tflite" / "int8.json").read_text())
    toolchain = document.get("key_document", document)["toolchain"]
    assert toolchain["name"] == "onnx2tf" and toolchain["python"] == "3.12"
    assert toolchain["requirements"]["onnx2tf"] == "2.6.9"
    assert _meta(workspace, "int8")["tflite"]["converter"] == "onnx2tf 2.6.9"
    plan = workspace.cli("plan", str(recipe))  # everything that passed stays cached
    assert plan.returncode == 0, plan.stderr
