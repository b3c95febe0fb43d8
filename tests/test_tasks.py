"""Detection, segmentation and text recognition end to end, on the trained models the task
recipes ship (tests/task_models.py): each exports to ONNX (a detector with NMS and any image
size, a CRNN with any line width), runs in ONNX Runtime and OpenVINO, and passes its task's
parity gates and ``evaluate``; a deliberately broken artifact of each task fails, naming its
metric."""

from __future__ import annotations

import json

import pytest
from conftest import QUICK_TIMING as QUICK
from conftest import outcomes

pytestmark = pytest.mark.slow

BROKEN = {
    # stage: the metric its failure must name
    "det_capped_parity": "recall",
    "seg_shifted_parity": "pixel_agreement_min",
    "ocr_blank_last_parity": "string_agreement",
}


@pytest.fixture(scope="module")
def task_run(tmp_path_factory, task_models):
    from conftest import Workspace

    workspace = Workspace(tmp_path_factory.mktemp("tasks"))
    scenes, lines = task_models.path("scenes"), task_models.path("lines")
    photos = f"images: {scenes}/images"
    stages = [
        "version: 1",
        "name: tasks",
        "stages:",
        *task_models.load_stages(),
        "  det_onnx: {type: export, input: det}",
        f"  det_parity: {{type: parity, input: det_onnx, images: {scenes}/images}}",
        "  det_ov: {type: convert-openvino, input: det_onnx}",
        f"  det_ov_parity: {{type: parity, input: det_ov, reference: det, {photos}}}",
        f"  det_eval: {{type: evaluate, input: det_onnx, dataset: {scenes}/images, "
        f"annotations: {scenes}/instances.json}}",
        "  det_capped_onnx: {type: export, input: det_capped}",
        f"  det_capped_parity: {{type: parity, input: det_capped_onnx, reference: det, "
        f"images: {scenes}/images}}",
        "  seg_onnx: {type: export, input: seg}",
        f"  seg_parity: {{type: parity, input: seg_onnx, images: {scenes}/images}}",
        # the accuracy target measures the INT8 candidate with the segmentation gates
        f"  seg_int8: {{type: quantize, input: seg_onnx, calibration: {{{photos}}}, "
        f"target: {{metric: parity, {photos}}}}}",
        f"  seg_int8_parity: {{type: parity, input: seg_int8, reference: seg, "
        f"images: {scenes}/images}}",
        f"  seg_eval: {{type: evaluate, input: seg_onnx, dataset: {scenes}}}",
        "  seg_shifted_onnx: {type: export, input: seg_shifted}",
        f"  seg_shifted_parity: {{type: parity, input: seg_shifted_onnx, reference: seg, "
        f"images: {scenes}/images}}",
        "  ocr_onnx: {type: export, input: ocr}",
        "  ocr_parity: {type: parity, input: ocr_onnx}",
        "  ocr_ov: {type: convert-openvino, input: ocr_onnx}",
        "  ocr_ov_parity: {type: parity, input: ocr_ov, reference: ocr}",
        "  ocr_e2e: {type: compose-preprocessing, input: ocr_onnx}",
        "  ocr_e2e_parity: {type: parity, input: ocr_e2e, reference: ocr}",
        f"  ocr_eval: {{type: evaluate, input: ocr_onnx, dataset: {lines}}}",
        "  ocr_blank_last_onnx: {type: export, input: ocr_blank_last}",
        "  ocr_blank_last_parity: {type: parity, input: ocr_blank_last_onnx, reference: ocr}",
        f"  ocr_bench: {{type: benchmark, inputs: [ocr_onnx, ocr_ov], batch_sizes: [1], {QUICK}}}",
    ]
    recipe = workspace.recipe("\n".join(stages) + "\n")
    result = workspace.cli("run", str(recipe), "--jobs", "2", timeout=1200)
    return workspace, recipe, result


def _report(workspace, stage: str, name: str) -> dict:
    return json.loads((workspace.out / stage / name).read_text())


def test_faithful_artifacts_pass_their_task_gates(task_run):
    workspace, _, result = task_run
    stages = outcomes(result.stderr)
    failed = sorted(stage for stage, outcome in stages.items() if outcome == "failed")
    assert failed == sorted(BROKEN), result.stderr
    rows = []
    for stage in (
        "det_parity",
        "det_ov_parity",
        "seg_parity",
        "seg_int8_parity",
        "ocr_parity",
        "ocr_ov_parity",
        "ocr_e2e_parity",
    ):
        report = _report(workspace, stage, "parity.json")
        assert report["passed"] and report["task"] in ("detection", "segmentation", "sequence")
        metrics = next(iter(report["metrics"]["images"].values()))
        rows.append(f"{stage:<16} {report['kind']:<9} {json.dumps(metrics, sort_keys=True)}")
    print("\n" + "\n".join(rows))
    detections = _report(workspace, "det_parity", "parity.json")["metrics"]["images"]
    # the trained detector finds the shapes: the gate compares real detections
    assert detections["detections"]["reference_detections"] >= 12
    assert _report(workspace, "ocr_e2e_parity", "parity.json")["kind"] == "composed"
    meta = json.loads((workspace.out / "seg_int8" / "artifact.json").read_text())["meta"]
    candidates = meta["quantization"]["recovery"]["candidates"]
    assert candidates[0]["passed"] and "pixel_agreement" in candidates[0]["fidelity"], candidates


def test_broken_artifacts_fail_naming_their_metric(task_run):
    _, _, result = task_run
    for stage, metric in BROKEN.items():
        line = next(ln for ln in result.stderr.splitlines() if f"stage '{stage}' failed" in ln)
        assert "parity gate failed" in line and metric in line, line
        print(line)


def test_evaluate_measures_each_task_on_its_labelled_data(task_run, task_models):
    workspace, _, _ = task_run
    det = _report(workspace, "det_eval", "evaluate.json")
    seg = _report(workspace, "seg_eval", "evaluate.json")
    ocr = _report(workspace, "ocr_eval", "evaluate.json")
    print(
        f"\nCOCO mAP@0.5 torch {det['torch']['map50']:.3f} artifact {det['artifact']['map50']:.3f}"
    )
    print(f"mIoU torch {seg['torch']['miou']:.3f} artifact {seg['artifact']['miou']:.3f}")
    accuracy = ocr["torch"]["accuracy"], ocr["artifact"]["accuracy"]
    print("text accuracy torch {:.3f} artifact {:.3f}".format(*accuracy))
    assert det["metric"] == "map" and det["artifact"]["map50"] > 0.5
    assert abs(det["drop"]) <= 0.01
    assert seg["metric"] == "miou" and seg["artifact"]["miou"] > 0.6
    assert ocr["metric"] == "accuracy" and ocr["artifact"]["accuracy"] >= 0.8
    assert ocr["drop"] == 0


def test_text_recogniser_takes_any_width_and_is_benchmarked(task_run):
    workspace, _, _ = task_run
    onnx_meta = json.loads((workspace.out / "ocr_onnx" / "artifact.json").read_text())["meta"]
    shape = onnx_meta["inputs"][0]["shape"]
    assert shape[1:3] == [1, 32] and isinstance(shape[3], str)  # height fixed, width dynamic
    assert onnx_meta["task"] == "sequence" and onnx_meta["ctc"]["alphabet"] == "0123456789"
    det_meta = json.loads((workspace.out / "det_onnx" / "artifact.json").read_text())["meta"]
    assert [o["name"] for o in det_meta["outputs"]] == ["boxes", "scores", "labels"]
    table = (workspace.out / "ocr_bench" / "benchmark.md").read_text()
    assert "onnxruntime" in table and "openvino" in table
