"""torch.compile rows in the benchmark (issue 16): the reference model through Inductor, with its
compile time apart from latency, after it passed the fp32 parity gates against eager; the new
benchmark fields leave every existing key (and committed lock) as it was."""

from __future__ import annotations

import json

import pytest

from edgepipe.key_documents import key_document
from edgepipe.stages import get_stage


def _document(**fields):
    stage = get_stage("benchmark")
    spec = stage.spec_class.model_validate({"type": "benchmark", "inputs": ["model"], **fields})
    return key_document(stage, spec, ["d" * 64], {}, {})


def test_unset_new_fields_stay_out_of_the_key():
    plain = _document()
    assert "torch_compile" not in plain["spec"] and "channels_last" not in plain["spec"]
    assert _document(torch_compile=[])["spec"] == plain["spec"]
    asked = _document(torch_compile=["inductor"], channels_last=True)
    assert asked["spec"]["torch_compile"] == ["inductor"] and asked["spec"]["channels_last"]


@pytest.mark.slow
def test_inductor_rows_with_compile_time_and_parity(workspace):
    recipe = workspace.recipe(
        """
        version: 1
        name: compiled
        stages:
          model: {type: load, source: timm, name: test_efficientnet, pretrained: false}
          bench:
            type: benchmark
            inputs: [model]
            torch_compile: [inductor]
            channels_last: true
            batch_sizes: [1]
            warmup_seconds: 0.2
            max_seconds: 3
        """
    )
    result = workspace.cli("run", str(recipe), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace.out / "bench" / "benchmark.json").read_text())
    eager, compiled = report["rows"]
    assert eager["runtime"] == "torch eager channels-last" and eager["parity"] == "reference"
    assert compiled["label"] == "model [inductor]"
    assert compiled["runtime"] == "torch.compile inductor channels-last"
    assert compiled["parity"] == "passed" and compiled["compile_s"] > 0
    assert compiled["speedup"] is not None
    table = (workspace.out / "bench" / "benchmark.md").read_text()
    assert "torch.compile time (first call of each shape, not in p50)" in table
