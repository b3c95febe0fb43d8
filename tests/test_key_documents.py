"""Action keys of real specs, and the reasons `plan` gives."""

from __future__ import annotations

from edgepipe.cache import action_key
from edgepipe.key_documents import explain, key_document
from edgepipe.stages.base import get_stage
from edgepipe.stages.export import ExportSpec

TOOLS = {"onnx": "1.23.2", "onnxscript": "0.7.2", "timm": "1.0.31", "torch": "2.14.1"}
INPUT = "ab" * 32


def export_document(**fields) -> dict:
    spec = ExportSpec(type="export", input="model", **fields)
    return key_document(get_stage("export"), spec, [INPUT], {}, TOOLS)


def test_export_key_is_pinned():
    # A golden value: if this changes, every user's cached exports are rebuilt. Change it only
    # on purpose (a new default, a new field, a bumped implementation version) and say so.
    # Changed: export v2 strips absolute-path stack traces from the ONNX metadata; v3 carries
    # the weights' origin in the artifact (verification and quantization pick gates by it).
    assert action_key(export_document()) == (
        "7cdff48b6c2de321b52c2cea3c7d605ae7d4ebbc6d87bb701cc17e69db95e18e"
    )


def test_export_key_document_holds_spec_after_defaults_inputs_and_tools():
    assert export_document() == {
        "key_version": 1,
        "stage_type": "export",
        "implementation_version": 3,
        "spec": {
            "type": "export",
            "opset": 18,
            "exporter": "auto",
            "dynamic_batch": True,
            "dynamic_hw": False,
            "batch_size": 1,
            "input_size": None,
            "input_name": "input",
            "output_names": ["output"],
            "constant_folding": True,
            "external_data": "auto",
        },
        "inputs": [INPUT],
        "files": {},
        "tools": TOOLS,
    }


def test_upstream_id_is_not_part_of_the_key():
    spec_a = ExportSpec(type="export", input="model")
    spec_b = ExportSpec(type="export", input="renamed")
    stage = get_stage("export")
    assert action_key(key_document(stage, spec_a, [INPUT], {}, TOOLS)) == action_key(
        key_document(stage, spec_b, [INPUT], {}, TOOLS)
    )


def test_explain_names_each_changed_part():
    old = export_document(opset=17)
    new = export_document(opset=18)
    assert explain(old, new, ["model"]) == ["opset changed: 17 → 18"]

    new["tools"] = {**TOOLS, "onnx": "1.24.0"}
    new["inputs"] = ["cd" * 32]
    assert explain(old, new, ["model"]) == [
        "opset changed: 17 → 18",
        "input 'model' changed (its output has different content)",
        "onnx 1.23.2 → 1.24.0",
    ]
    assert explain(None, new, ["model"]) == ["never built"]
    assert explain(new, new, ["model"]) == [
        "same inputs as the last run, but its output is no longer in the cache"
    ]


def test_explain_reports_a_missing_tool():
    old = export_document()
    new = export_document()
    new["tools"] = {**TOOLS, "onnxscript": None}
    assert explain(old, new, ["model"]) == ["onnxscript 0.7.2 → not installed"]


def test_explain_survives_a_stage_changing_type():
    old = export_document()
    new = {**old, "stage_type": "load", "files": {"path": "ef" * 32}, "inputs": []}
    reasons = explain(old, new, [])
    assert "stage type changed: 'export' → 'load'" in reasons
    assert "file 'path' changed (different content)" in reasons
