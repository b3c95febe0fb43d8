"""Load a YAML recipe into a validated :class:`Recipe`, with ``file:line`` on every error."""

from __future__ import annotations

__all__ = ["ID_PATTERN", "Recipe", "did_you_mean", "load_recipe", "parse_recipe"]

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError

from edgepipe import stages as _stages  # noqa: F401  (registers every stage type)
from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.matrix import expand_matrix
from edgepipe.stages.base import FieldError, registered_stages
from edgepipe.stages.package_files import is_package_reference, package_file_problem
from edgepipe.yaml_lines import DuplicateKeyError, KeyNotScalarError, LineMap, load_with_lines

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
# ids a matrix expansion makes carry the cell: onnx[resnet50,int8]
EXPANDED_ID_PATTERN = r"^[A-Za-z0-9_-]+(\[[A-Za-z0-9_.,=-]+\])?$"
StageId = Annotated[str, StringConstraints(pattern=EXPANDED_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AnyStageSpec = Annotated[
    Union[tuple(stage.spec_class for stage in registered_stages().values())],  # noqa: UP007
    Field(discriminator="type"),
]


class Recipe(BaseModel):
    """A pipeline: named stages whose ``input``/``inputs`` fields form a DAG."""

    model_config = ConfigDict(extra="forbid", title="edgepipe recipe")

    version: Literal[1] = Field(description="Recipe format version. Only 1 exists.")
    name: Name = Field(
        description="Recipe name: names the output folder build/<name>/ and the cache index. "
        "Letters, digits, '_' and '-' only."
    )
    description: str = Field(default="", description="Free text for humans.")
    matrix: dict[str, list[str | int | float]] | None = Field(
        default=None,
        description="Axes to repeat stages over, e.g. {model: [resnet50, efficientnet_lite0]}: "
        "a stage mentioning ${model} (or fed by one that does) runs once per value, as "
        'id[value]; `inputs: ["onnx[*]"]` collects every cell.',
    )
    stages: dict[StageId, AnyStageSpec] = Field(
        min_length=1,
        description="Stage id → stage spec. Ids are letters, digits, '_' and '-'; they are what "
        "logs, reports and `edgepipe plan` show.",
    )

    _path: Path | None = PrivateAttr(default=None)
    _lines: LineMap = PrivateAttr(default_factory=lambda: LineMap({}))

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        """Directory that relative paths in the recipe are resolved against."""
        return self._path.parent if self._path else Path.cwd()

    def line_of(self, *key_path: str | int) -> int | None:
        return self._lines.line_of(key_path)


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; raises :class:`RecipeError` with file:line issues."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(path, [RecipeIssue("file not found")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        msg = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8"
        raise RecipeError(path, [RecipeIssue(msg, line=line)]) from None
    except OSError as exc:
        what = "is a directory, not a recipe file" if path.is_dir() else f"cannot read: {exc}"
        raise RecipeError(path, [RecipeIssue(what)]) from None
    return parse_recipe(text, path)


def parse_recipe(text: str, path: Path | None = None) -> Recipe:
    """Validate recipe text; ``path`` is used for messages and for resolving relative paths."""
    data, lines = _parse_yaml(text, path)
    if data is None:
        what = "is empty" if not text.strip() else "has no content (only comments)"
        raise RecipeError(
            path,
            [
                RecipeIssue(
                    f"the file {what}; a recipe needs 'version', 'name' and 'stages'", line=1
                )
            ],
        )
    if not isinstance(data, dict):
        raise RecipeError(
            path,
            [
                RecipeIssue(
                    "a recipe is a mapping with 'version', 'name' and 'stages', "
                    f"not a {_kind(data)}",
                    line=lines.line_of(()),
                )
            ],
        )
    data = expand_matrix(data, lines, path)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_from_error(err, lines) for err in exc.errors()]
        raise RecipeError(path, _dedupe(issues)) from None
    recipe._path = path.resolve() if path else None
    recipe._lines = lines
    _check_files(recipe)
    return recipe


def _parse_yaml(text: str, path: Path | None) -> tuple[Any, LineMap]:
    try:
        return load_with_lines(text)
    except DuplicateKeyError as exc:
        first = f"first defined on line {exc.first_line}"
        if exc.path == ("stages",):
            msg = f"duplicate stage id '{exc.key}' ({first}); stage ids must be unique"
            issue = RecipeIssue(msg, line=exc.line, stage_id=exc.key)
        else:
            stage = str(exc.path[1]) if exc.path[:1] == ("stages",) and len(exc.path) > 1 else None
            field = ".".join(str(p) for p in (*exc.path[2:], exc.key)) if stage else None
            issue = RecipeIssue(f"duplicate key '{exc.key}' ({first})", exc.line, stage, field)
        raise RecipeError(path, [issue]) from None
    except KeyNotScalarError as exc:
        raise RecipeError(path, [RecipeIssue(str(exc), line=exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        if getattr(exc, "context", None):
            problem = f"{exc.context}, {problem}"
        col = f" (column {mark.column + 1})" if mark else ""
        msg = f"YAML syntax error: {problem}{col}"
        raise RecipeError(path, [RecipeIssue(msg, line=line)]) from None


def _issue_from_error(err: dict[str, Any], lines: LineMap) -> RecipeIssue:
    loc = list(err["loc"])
    stage_id = None
    field_loc = loc
    if len(loc) >= 2 and loc[0] == "stages":
        stage_id = str(loc[1])
        field_loc = loc[2:]
        if field_loc and field_loc[0] in registered_stages():
            field_loc = field_loc[1:]  # pydantic puts the union tag in the location
        yaml_path = ("stages", stage_id, *field_loc)
    else:
        yaml_path = tuple(loc)
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, FieldError):  # a cross-field check names the field it is about
        field_loc = [*field_loc, error.field]
        yaml_path = (*yaml_path, error.field)
    if field_loc[-1:] == ["[key]"]:  # pydantic's location for an invalid mapping key
        return _bad_key_issue(err, stage_id, loc, lines)
    if err["type"] == "missing" and field_loc and isinstance(field_loc[-1], int):
        message = f"too few values: item {field_loc[-1] + 1} is missing"
        field_loc = field_loc[:-1]
        return RecipeIssue(
            message, lines.line_of(yaml_path), stage_id, ".".join(map(str, field_loc))
        )
    field = ".".join(str(part) for part in field_loc) or None
    message = _message(err, stage_id, field_loc)
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        field = "type"
        yaml_path = (*yaml_path, "type")
    return RecipeIssue(message, line=lines.line_of(yaml_path), stage_id=stage_id, field=field)


def _bad_key_issue(
    err: dict[str, Any], stage_id: str | None, loc: list, lines: LineMap
) -> RecipeIssue:
    if loc[:1] == ["stages"] and len(loc) == 3 and err["type"] == "string_type":
        msg = (
            f"stage id {loc[1]} is not text (YAML reads it as {_kind(loc[1])}): "
            f"quote it ('{loc[1]}')"
        )
        return RecipeIssue(msg, lines.line_of(("stages", loc[1])), str(loc[1]), None)
    if loc[:1] == ["stages"] and len(loc) == 3:
        msg = (
            f"invalid stage id {str(loc[1])!r}: use letters, digits, '_' and '-' only "
            "(ids name output folders and cache entries)"
        )
        return RecipeIssue(msg, lines.line_of(("stages", loc[1])), str(loc[1]), None)
    return RecipeIssue(
        f"invalid key {str(loc[-2])!r}: {err['msg']}", lines.line_of(tuple(loc[:-1]))
    )


def _message(err: dict[str, Any], stage_id: str | None, field_loc: list) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    known = sorted(registered_stages())
    if kind == "union_tag_invalid":
        hint = did_you_mean(str(ctx.get("tag")), known)
        return f"unknown stage type '{ctx.get('tag')}'{hint}; known types: {', '.join(known)}"
    if kind == "union_tag_not_found":
        return f"missing 'type'; one of: {', '.join(known)}"
    if kind == "extra_forbidden":
        name = str(field_loc[-1]) if field_loc else "?"
        allowed = _allowed_fields(err, stage_id, field_loc)
        return f"unknown field '{name}'{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "model_type" or kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg} (got {_kind(err.get('input'))} {err.get('input')!r})"
    if "input" in err and kind not in ("value_error", "assertion_error"):
        return f"{msg} (got {err['input']!r})"
    return msg


def _allowed_fields(err: dict[str, Any], stage_id: str | None, field_loc: list) -> list[str]:
    """Field names of the model that rejected ``field_loc[-1]``, found by walking annotations."""
    if stage_id is None:
        model: Any = Recipe
    else:
        tag = err["loc"][2] if len(err["loc"]) > 2 else None
        stage = registered_stages().get(str(tag))
        if stage is None:
            return []
        model = stage.spec_class
    for part in field_loc[:-1]:
        info = model.model_fields.get(str(part)) if isinstance(model, type) else None
        candidates = [info.annotation, *get_args(info.annotation)] if info else []
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return sorted(model.model_fields)


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _kind(value: Any) -> str:
    names = {
        dict: "mapping",
        list: "list",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _dedupe(issues: list[RecipeIssue]) -> list[RecipeIssue]:
    seen, unique = set(), []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            unique.append(issue)
    return unique


def _check_files(recipe: Recipe) -> None:
    issues = []
    for stage_id, spec in recipe.stages.items():
        wanted = [(name, rel, "file") for name, rel in spec.file_fields().items()]
        wanted += [(name, rel, "folder") for name, rel in spec.dir_fields().items()]
        for field_name, rel, kind in wanted:
            problem = _path_problem(recipe.base_dir / rel, rel, kind)
            if problem:
                line = recipe.line_of("stages", stage_id, field_name)
                issues.append(RecipeIssue(problem, line, stage_id, field_name))
    if issues:
        raise RecipeError(recipe.path, issues)


def _path_problem(target: Path, rel: Path, kind: str) -> str | None:
    if is_package_reference(rel):
        return package_file_problem(rel)
    if not target.exists():
        return f"{kind} not found: {rel} (resolved to {target}); paths are relative to the recipe"
    if kind == "file" and target.is_dir():
        return f"{rel} is a folder; a file is expected"
    if kind == "folder" and not target.is_dir():
        return f"{rel} is a file; a folder is expected"
    return None
