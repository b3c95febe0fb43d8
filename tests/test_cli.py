"""The small commands: validate, graph, stages, schema, plan output, cache maintenance."""

from __future__ import annotations

import pytest

from edgepipe.stages import registered_stages

QUICK = """
version: 1
name: cli
stages:
  model: {type: load, name: test_vit}
  onnx: {type: export, input: model, exporter: torchscript}
"""


def test_validate_ok(workspace):
    recipe = workspace.recipe(QUICK)
    result = workspace.cli("validate", str(recipe))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "2 stages" in result.stdout


def test_graph_formats(workspace):
    recipe = workspace.recipe(QUICK)
    assert "model --> onnx" in workspace.cli("graph", str(recipe)).stdout
    assert '"model" -> "onnx";' in workspace.cli("graph", str(recipe), "--format", "dot").stdout
    bad = workspace.cli("graph", str(recipe), "--format", "png")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_stages_lists_every_type_with_descriptions(workspace):
    result = workspace.cli("stages")
    assert result.returncode == 0
    for name, stage in registered_stages().items():
        assert name in result.stdout
        for field in stage.spec_class.model_fields:
            if field != "type":
                assert field in result.stdout
    unknown = workspace.cli("stages", "exprot")
    assert unknown.returncode == 2


def test_schema_check_detects_a_stale_file(workspace):
    target = workspace.root / "schema.json"
    assert workspace.cli("schema", "--out", str(target)).returncode == 0
    assert workspace.cli("schema", "--out", str(target), "--check").returncode == 0
    target.write_text(target.read_text().replace("Stage type", "Stage kind"))
    stale = workspace.cli("schema", "--out", str(target), "--check")
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_missing_recipe_file_is_one_line(workspace):
    result = workspace.cli("run", "nope.yaml")
    assert result.returncode == 3
    assert result.stderr.strip() == "error: nope.yaml: file not found"


@pytest.mark.slow
def test_cache_commands(workspace):
    recipe = workspace.recipe(QUICK)
    assert workspace.cli("run", str(recipe), "--until", "model").returncode == 0
    info = workspace.cli("cache", "info")
    assert info.returncode == 0 and "actions" in info.stdout
    listing = workspace.cli("cache", "ls")
    assert "model" in listing.stdout and "load" in listing.stdout
    assert workspace.cli("cache", "gc").returncode == 0
    # gc keeps what records reference: the stage is still cached
    plan = workspace.cli("plan", str(recipe), "--until", "model")
    assert "cached" in plan.stdout
    assert workspace.cli("cache", "clear", "--yes").returncode == 0
    plan = workspace.cli("plan", str(recipe), "--until", "model")
    assert "will run" in plan.stdout


def test_force_and_only(workspace):
    recipe = workspace.recipe(QUICK)
    plan = workspace.cli("plan", str(recipe), "--only", "onnx")
    assert plan.returncode == 0
    assert "blocked" in plan.stdout and "--until onnx" in plan.stdout
    run = workspace.cli("run", str(recipe), "--only", "onnx")
    assert run.returncode == 4 and "input 'model' is not built" in run.stderr
    unknown = workspace.cli("run", str(recipe), "--force", "onxx")
    assert unknown.returncode == 3 and "did you mean 'onnx'" in unknown.stderr
    # forcing a stage outside the selection would not rebuild it: said, not half-done
    outside = workspace.cli("plan", str(recipe), "--only", "onnx", "--force", "model")
    assert outside.returncode == 2 and "--force model: that stage is not selected" in outside.stderr
