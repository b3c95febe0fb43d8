"""INT8 on a model trained here (tests/digits.py): every INT8 artifact keeps top-1 within a
point of the torch model on held-out digits; a quantize stage with a target recovers when plain
INT8 misses it, reports every candidate, and a rebuild replays the recorded choice."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _recipe(digits, extra: str) -> str:
    return "\n".join(
        [
            "version: 1",
            "name: digits",
            "stages:",
            digits.load_stage(),
            "  onnx: {type: export, input: model, exporter: torchscript}",
            extra,
        ]
    )


def _evaluate(digits, stage: str, source: str) -> str:
    return f"  {stage}: {{type: evaluate, input: {source}, dataset: {digits.val}}}"


def test_int8_artifacts_keep_top1_within_a_point(workspace, digits):
    calibration = f"calibration: {{images: {digits.calibration}, count: 64}}"
    stages = [
        "  e2e: {type: compose-preprocessing, input: onnx}",
        f"  ort_int8: {{type: quantize, input: onnx, {calibration}}}",
        f"  e2e_int8: {{type: quantize, input: e2e, {calibration}}}",
        "  ir: {type: convert-openvino, input: onnx}",
        f"  ov_int8: {{type: quantize, input: ir, backend: openvino, {calibration}}}",
        "  e2e_ir: {type: convert-openvino, input: e2e}",
        f"  e2e_ov_int8: {{type: quantize, input: e2e_ir, backend: openvino, {calibration}}}",
    ]
    artifacts = ["ort_int8", "e2e_int8", "ov_int8", "e2e_ov_int8"]
    stages += [_evaluate(digits, f"eval_{a}", a) for a in artifacts]
    recipe = workspace.recipe(_recipe(digits, "\n".join(stages)))
    result = workspace.cli("run", str(recipe), "--jobs", "2", timeout=900)
    assert result.returncode == 0, result.stderr  # evaluate gates a drop over 0.01 itself
    rows = []
    for artifact in artifacts:
        report = json.loads((workspace.out / f"eval_{artifact}" / "evaluate.json").read_text())
        assert report["images"] == 360
        assert report["torch"]["top1"] == pytest.approx(digits.torch_top1, abs=1e-6)
        assert report["torch"]["top1"] > 0.95  # a model that learnt something
        assert report["top1_drop"] <= 0.01, (artifact, report)
        rows.append(f"{artifact:<12} top-1 {report['artifact']['top1']:.4f}")
    print(f"\ntorch top-1 {digits.torch_top1:.4f}\n" + "\n".join(rows))


RECOVERING = """
  int8:
    type: quantize
    input: onnx
    calibration: {{images: {calibration}, count: 64}}
    target: {{metric: parity, thresholds: {{max_kl: 0.0005}}, max_float_nodes: 2}}
  check: {{type: parity, input: int8}}
"""


def test_recovery_reports_candidates_keeps_one_and_replays_it(workspace, digits):
    extra = RECOVERING.format(calibration=digits.calibration)
    recipe = workspace.recipe(_recipe(digits, extra))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    meta = json.loads((workspace.out / "int8" / "artifact.json").read_text())["meta"]
    recovery = meta["quantization"]["recovery"]
    names = [c["name"] for c in recovery["candidates"]]
    # a KL gate no INT8 digit model meets: every rung is tried, the fp16 fallback kept
    assert names[0] == "configured" and "percentile" in names and "entropy-per-tensor" in names
    assert any(name.endswith("-float") for name in names) and names[-1] == "fp16"
    assert recovery["kept"] == "fp16" and meta["precision"] == "fp16"
    # fidelity per candidate; no timing (it would make the artifact's bytes differ every build)
    assert all(c["fidelity"] and "ms" not in c for c in recovery["candidates"])
    table = (workspace.out / "int8" / "quantization.md").read_text()
    assert "| candidate | settings | precision | fidelity | verdict |" in table
    assert "**kept**" in table
    lock = (workspace.root / "recipe.lock").read_text()
    assert "recovered: true" in lock and "mode: fp16" in lock

    # CI rebuilds without searching: the lockfile's choice is built and checked, nothing else
    rebuilt = workspace.cli("run", str(recipe), "--force", "int8")
    assert rebuilt.returncode == 0, rebuilt.stderr
    meta = json.loads((workspace.out / "int8" / "artifact.json").read_text())["meta"]
    recovery = meta["quantization"]["recovery"]
    assert [c["name"] for c in recovery["candidates"]] == ["recorded"]
    assert recovery["chosen"] == "replayed from the lockfile" and recovery["recovered"]


def test_a_target_nothing_meets_fails_with_the_candidates(workspace, digits):
    extra = f"""
  int8:
    type: quantize
    input: onnx
    calibration: {{images: {digits.calibration}, count: 16}}
    target: {{metric: parity, thresholds: {{min_cosine: 1.0}}, recover: false, fallback: none}}
"""
    result = workspace.cli("run", str(workspace.recipe(_recipe(digits, extra))))
    assert result.returncode == 1
    assert "no quantization candidate meets the target (parity)" in result.stderr
    assert "| configured |" in result.stderr and "cosine_min" in result.stderr


def test_top1_target_on_a_labelled_folder(workspace, digits):
    extra = f"""
  int8:
    type: quantize
    input: onnx
    calibration: {{images: {digits.calibration}, count: 64}}
    target: {{metric: top1, dataset: {digits.val}, max_top1_drop: 0.01}}
"""
    result = workspace.cli("run", str(workspace.recipe(_recipe(digits, extra))))
    assert result.returncode == 0, result.stderr
    meta = json.loads((workspace.out / "int8" / "artifact.json").read_text())["meta"]
    kept = meta["quantization"]["recovery"]["candidates"][-1]
    assert kept["passed"] and "top-1" in kept["fidelity"] and "vs float" in kept["fidelity"]
