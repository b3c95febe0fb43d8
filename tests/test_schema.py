"""The committed JSON schema matches the models, and every shipped recipe is valid."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from edgepipe.graph import PipelineGraph
from edgepipe.recipe import load_recipe
from edgepipe.schema import recipe_schema_text

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schemas" / "recipe.schema.json"
PIPELINES = sorted((REPO / "pipelines").glob("*.yaml"))


def test_committed_schema_is_current():
    assert SCHEMA.read_text() == recipe_schema_text(), "stale schema: run `edgepipe schema`"


def test_every_field_is_documented():
    def walk(node, path=""):
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert "description" in prop, f"{path}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("recipe", PIPELINES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_carry_the_modeline(recipe):
    first_line = recipe.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/recipe.schema.json"
    jsonschema.validate(yaml.safe_load(recipe.read_text()), json.loads(SCHEMA.read_text()))
    PipelineGraph(load_recipe(recipe))


def test_schema_rejects_what_the_models_reject():
    bad = {"version": 1, "name": "x", "stages": {"m": {"type": "load", "name": "r", "nme": 1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize(
    "recipe", [p for p in PIPELINES if p.with_suffix(".lock").exists()], ids=lambda p: p.name
)
def test_committed_lockfiles_match_their_recipes(recipe, tmp_path):
    """The CI drift gate on the shipped recipes: a recipe edited without rebuilding its lock
    (or a toolchain pin moved without it) fails here first."""
    from edgepipe.cache import Cache
    from edgepipe.lockfile import check_lock, read_lock
    from edgepipe.planner import Planner

    graph = PipelineGraph(load_recipe(recipe))
    differences = check_lock(
        graph, Planner(graph, Cache(tmp_path)), read_lock(recipe.with_suffix(".lock"))
    )
    assert differences == []
