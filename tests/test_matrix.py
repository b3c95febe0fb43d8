"""matrix: recipes over several models/precisions, expanded, validated and cached per cell."""

from __future__ import annotations

import json

import pytest

from edgepipe.errors import RecipeError
from edgepipe.graph import PipelineGraph
from edgepipe.recipe import parse_recipe

MATRIX = """
version: 1
name: grid
matrix:
  model: [test_resnet, test_vit]
  opset: [17, 18]
stages:
  load: {type: load, name: "${model}"}
  onnx: {type: export, input: load, opset: "${opset}", exporter: torchscript}
  check: {type: parity, input: onnx}
  bench: {type: benchmark, inputs: ["onnx[*]"], max_seconds: 1, warmup_seconds: 0.05,
          window_seconds: 0.05}
"""


def test_expansion_ids_inputs_and_types():
    recipe = parse_recipe(MATRIX)
    stages = recipe.stages
    assert set(stages) == {
        "load[test_resnet]",
        "load[test_vit]",
        "onnx[test_resnet,17]",
        "onnx[test_resnet,18]",
        "onnx[test_vit,17]",
        "onnx[test_vit,18]",
        "check[test_resnet,17]",
        "check[test_resnet,18]",
        "check[test_vit,17]",
        "check[test_vit,18]",
        "bench",
    }
    assert stages["onnx[test_vit,18]"].input == "load[test_vit]"
    assert stages["onnx[test_vit,18]"].opset == 18  # the whole-string reference keeps the int
    # onnx[*] collects every cell: one benchmark table over the whole grid
    assert stages["bench"].inputs == [
        "onnx[test_resnet,17]",
        "onnx[test_resnet,18]",
        "onnx[test_vit,17]",
        "onnx[test_vit,18]",
    ]
    PipelineGraph(recipe)


def test_errors_point_at_the_written_stage():
    with pytest.raises(RecipeError) as caught:
        parse_recipe(MATRIX.replace('opset: "${opset}"', 'opset: "${opst}"'))
    assert "${opst} is not a matrix axis" in str(caught.value)
    with pytest.raises(RecipeError) as caught:
        parse_recipe(MATRIX.replace("exporter: torchscript", "exporter: torchscrip"))
    message = str(caught.value)
    assert ":9: stage 'onnx[test_resnet,17]': field 'exporter'" in message


@pytest.mark.slow
def test_matrix_runs_and_caches_per_cell(workspace):
    recipe = workspace.recipe(MATRIX.replace("  opset: [17, 18]\n", "  opset: [17]\n"))
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace.out / "bench" / "benchmark.json").read_text())
    assert {row["label"] for row in report["rows"]} == {
        "load[test_resnet]",
        "onnx[test_resnet,17]",
        "onnx[test_vit,17]",
    }
    assert (workspace.out / "check[test_vit,17]" / "parity.json").is_file()

    recipe.write_text(
        recipe.read_text().replace(
            "[test_resnet, test_vit]", "[test_resnet, test_vit, test_convnext]"
        )
    )
    plan = {
        p["stage"]: p["status"]
        for p in json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    }
    assert plan["onnx[test_resnet,17]"] == "cached" and plan["onnx[test_vit,17]"] == "cached"
    assert plan["onnx[test_convnext,17]"] == "run"


def test_plan_groups_fan_out_one_job_per_model_and_leave_joins_to_the_final_job(workspace):
    recipe = workspace.recipe(MATRIX)
    result = workspace.cli("plan", str(recipe), "--groups")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    groups = {tuple(g["until"]): g for g in plan["groups"]}
    assert set(groups) == {
        ("check[test_resnet,17]", "check[test_resnet,18]"),
        ("check[test_vit,17]", "check[test_vit,18]"),
    }
    resnet = groups[("check[test_resnet,17]", "check[test_resnet,18]")]
    assert resnet["stages"][0] == "load[test_resnet]" and resnet["to_run"] == 5
    assert plan["final"] == {"stages": ["bench"], "to_run": 1}  # it joins both models
    every = [s for g in plan["groups"] for s in g["stages"]] + plan["final"]["stages"]
    stages = json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    assert sorted(every) == sorted(p["stage"] for p in stages)  # each stage in one place
