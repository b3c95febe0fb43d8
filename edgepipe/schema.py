"""The recipe's JSON schema, generated from the Pydantic models (``edgepipe schema``)."""

from __future__ import annotations

__all__ = ["SCHEMA_ID", "recipe_schema_text"]

import json

from edgepipe.recipe import Recipe

SCHEMA_ID = "https://edgepipe.dev/schemas/recipe.schema.json"


def recipe_schema_text() -> str:
    """Deterministic schema text: same models → same bytes, so a stale file is a diff."""
    schema = Recipe.model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
