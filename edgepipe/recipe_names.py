"""The recipe name and stage ids become folder and file names (build/<name>/<id>/,
<id>.error.log, index/<name>/<id>.json, <id>-<pid>-<16 hex digits> tmp names), so they are
checked before anything uses them: text, and short enough for any file system."""

from __future__ import annotations

__all__ = ["check_names", "expanded_id_too_long"]

from pathlib import Path
from typing import Any

from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.recipe_limits import MAX_EXPANDED_ID_LENGTH, MAX_ID_LENGTH
from edgepipe.recipe_messages import kind_of, shown
from edgepipe.yaml_lines import LineMap

_WHY = "ids and the recipe name become folder and file names"


def check_names(data: dict[str, Any], lines: LineMap, path: Path | None) -> None:
    """Refuse a stage id YAML did not read as text, and a name or id too long for a file."""
    issues = []
    name = data.get("name")
    if isinstance(name, str) and len(name) > MAX_ID_LENGTH:
        msg = _too_long("the recipe name", name, MAX_ID_LENGTH)
        issues.append(RecipeIssue(msg, lines.line_of(("name",)), field="name"))
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return _raise_any(issues, path)
    written = lines.keys_under(("stages",))
    if len(written) != len(stages):  # keys YAML read as equal (yes/true): position is unknown
        written = [shown(stage_id, quote=False) for stage_id in stages]
    for stage_id, text in zip(stages, written, strict=True):
        line = lines.line_of(("stages", text))
        if not isinstance(stage_id, str):
            msg = (
                f"stage id {text} is not text (YAML reads it as {kind_of(stage_id)}): "
                f"quote it ('{text}')"
            )
            issues.append(RecipeIssue(msg, line, shortened(text)))
        elif len(stage_id) > MAX_ID_LENGTH:
            msg = _too_long("the stage id", stage_id, MAX_ID_LENGTH)
            issues.append(RecipeIssue(msg, line, stage_id=shortened(stage_id)))
    _raise_any(issues, path)


def _raise_any(issues: list[RecipeIssue], path: Path | None) -> None:
    if issues:
        raise RecipeError(path, issues)


def expanded_id_too_long(stage_id: str, example: str) -> str:
    """The message for a matrix cell id (``example``, the longest) over the bound."""
    return (
        f"the matrix makes stage ids up to {len(example)} characters long "
        f"({shortened(example)!r}); at most {MAX_EXPANDED_ID_LENGTH} are allowed because "
        f"{_WHY}: use shorter matrix values or a shorter id than '{stage_id}'"
    )


def _too_long(what: str, value: str, limit: int) -> str:
    return (
        f"{what} is {len(value)} characters long; at most {limit} are allowed because "
        f"{_WHY} (most file systems cap a name at 255 bytes)"
    )


def shortened(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:keep]}…"
