"""Turn what YAML and Pydantic report about a recipe into :class:`RecipeIssue`\\ s: one
readable sentence each, with the line, the stage id and the field it is about."""

from __future__ import annotations

__all__ = ["did_you_mean", "issues_from_errors", "kind_of", "parse_yaml", "shown"]

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.stages.base import FieldError, registered_stages
from edgepipe.yaml_lines import DuplicateKeyError, LineMap, YamlShapeError, load_with_lines

_SHOWN_CHARS = 80  # a value quoted back in a message: enough to recognise it


def parse_yaml(text: str, path: Path | None) -> tuple[Any, LineMap]:
    try:
        return load_with_lines(text)
    except DuplicateKeyError as exc:
        first = f"first defined on line {exc.first_line}"
        key = shown(exc.key, quote=False)
        if exc.path == ("stages",):
            msg = f"duplicate stage id '{key}' ({first}); stage ids must be unique"
            issue = RecipeIssue(msg, line=exc.line, stage_id=key)
        else:
            stage = str(exc.path[1]) if exc.path[:1] == ("stages",) and len(exc.path) > 1 else None
            field = ".".join(str(p) for p in (*exc.path[2:], exc.key)) if stage else None
            issue = RecipeIssue(f"duplicate key '{key}' ({first})", exc.line, stage, field)
        raise RecipeError(path, [issue]) from None
    except YamlShapeError as exc:  # nesting, alias expansion, a non-scalar key…
        raise RecipeError(path, [RecipeIssue(str(exc), line=exc.line)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML refuses: no mark, a position
        line = text[: exc.position].count("\n") + 1
        msg = (
            f"YAML syntax error: the control character #x{exc.character:04x} is not allowed "
            "in YAML text (column "
            f"{exc.position - text.rfind(chr(10), 0, exc.position)}); remove it"
        )
        raise RecipeError(path, [RecipeIssue(msg, line=line)]) from None
    except yaml.YAMLError as exc:
        raise RecipeError(path, [_syntax_issue(exc)]) from None


def _syntax_issue(exc: yaml.YAMLError) -> RecipeIssue:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    problem = getattr(exc, "problem", None) or str(exc)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and line is not None and start.line + 1 != line:
        problem = f"{context} (which starts on line {start.line + 1}), {problem}"
    elif context:
        problem = f"{context}, {problem}"
    col = f" (column {mark.column + 1})" if mark else ""
    return RecipeIssue(f"YAML syntax error: {problem}{col}", line=line)


def issues_from_errors(
    errors: list[dict[str, Any]], lines: LineMap, root: type[BaseModel]
) -> list[RecipeIssue]:
    """The issues for Pydantic's errors about ``root`` (the recipe model), each once.

    A misspelt required field is two errors to Pydantic (``inputs`` missing, ``input``
    unknown); the unknown field's "did you mean 'inputs'?" says it all, so the other goes.
    """
    missing = sorted(set(_names_missing(errors)))  # once, not per error: thousands may come
    misspelt = {
        (*err["loc"][:-1], hint)
        for err in errors
        if err["type"] == "extra_forbidden"
        for hint in difflib.get_close_matches(str(err["loc"][-1]), missing, 1, 0.6)
    }
    kept = [err for err in errors if not (err["type"] == "missing" and err["loc"] in misspelt)]
    return list(dict.fromkeys(issue_from_error(err, lines, root) for err in kept))


def _names_missing(errors: list[dict[str, Any]]) -> list[str]:
    return [str(err["loc"][-1]) for err in errors if err["type"] == "missing" and err["loc"]]


def issue_from_error(err: dict[str, Any], lines: LineMap, root: type[BaseModel]) -> RecipeIssue:
    """The issue for one of Pydantic's errors about ``root`` (the recipe model)."""
    loc = list(err["loc"])
    stage_id = None
    field_loc = loc
    if len(loc) >= 2 and loc[0] == "stages":
        stage_id = _as_text(loc[1])  # whole: it is looked up in the line map
        field_loc = loc[2:]
        if field_loc and field_loc[0] in registered_stages():
            field_loc = field_loc[1:]  # pydantic puts the union tag in the location
        yaml_path = ("stages", stage_id, *field_loc)
    else:
        yaml_path = tuple(loc)
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, FieldError):  # a cross-field check names the field it is about
        inner = [int(p) if p.isdigit() else p for p in error.field.split(".")]
        field_loc = [*field_loc, *inner]
        yaml_path = (*yaml_path, *inner)
    if field_loc[-1:] == ["[key]"]:  # pydantic's location for an invalid mapping key
        return _bad_key_issue(err, stage_id, loc, lines)
    if err["type"] == "missing" and field_loc and isinstance(field_loc[-1], int):
        message = f"too few values: item {field_loc[-1] + 1} is missing"
        field_loc = field_loc[:-1]
        return RecipeIssue(
            message, lines.line_of(yaml_path), stage_id, ".".join(map(str, field_loc))
        )
    field = ".".join(str(part) for part in field_loc) or None
    message = _message(err, stage_id, field_loc, root)
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        field = "type"
        yaml_path = (*yaml_path, "type")
    return RecipeIssue(message, line=lines.line_of(yaml_path), stage_id=stage_id, field=field)


def _bad_key_issue(
    err: dict[str, Any], stage_id: str | None, loc: list, lines: LineMap
) -> RecipeIssue:
    if loc[:1] == ["stages"] and len(loc) == 3 and err["type"] == "string_type":
        msg = (
            f"stage id {shown(loc[1])} is not text (YAML reads it as {kind_of(loc[1])}): "
            f"quote it ('{shown(loc[1], quote=False)}')"
        )
        return RecipeIssue(msg, lines.line_of(("stages", loc[1])), _as_text(loc[1]))
    if loc[:1] == ["stages"] and len(loc) == 3:
        msg = (
            f"invalid stage id {shown(loc[1])}: use letters, digits, '_' and '-' only "
            "(ids name output folders and cache entries)"
        )
        return RecipeIssue(msg, lines.line_of(("stages", loc[1])), _as_text(loc[1]))
    return RecipeIssue(
        f"invalid key {shown(loc[-2])}: {err['msg']}", lines.line_of(tuple(loc[:-1]))
    )


def _message(err: dict[str, Any], stage_id: str | None, field_loc: list, root: type) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    known = sorted(registered_stages())
    if kind == "union_tag_invalid":
        tag = shown(ctx.get("tag"), quote=False)
        return f"unknown stage type '{tag}'{did_you_mean(tag, known)}; known types: " + ", ".join(
            known
        )
    if kind == "union_tag_not_found":
        return f"missing 'type'; one of: {', '.join(known)}"
    if kind == "extra_forbidden":
        name = shown(field_loc[-1], quote=False) if field_loc else "?"
        allowed = _allowed_fields(err, stage_id, field_loc, root)
        listed = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown field '{name}'{did_you_mean(name, allowed)}{listed}"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "model_type" or kind.endswith("_type") or kind.endswith("_parsing"):
        value = err.get("input")
        got = "null" if value is None else f"{kind_of(value)} {shown(value)}"
        return f"{msg} (got {got})"
    if "input" in err and kind not in ("value_error", "assertion_error"):
        return f"{msg} (got {shown(err['input'])})"
    return msg


def _allowed_fields(
    err: dict[str, Any], stage_id: str | None, field_loc: list, root: type
) -> list[str]:
    """Field names of the model that rejected ``field_loc[-1]``, found by walking annotations."""
    if stage_id is None:
        model: Any = root
    else:
        tag = err["loc"][2] if len(err["loc"]) > 2 else None
        stage = registered_stages().get(str(tag))
        if stage is None:
            return []
        model = stage.spec_class
    annotation: Any = model
    for part in field_loc[:-1]:
        annotation = _inner(annotation, part)
        if annotation is None:
            return []
    found = _model_in(annotation)
    return sorted(found.model_fields) if found else []


def _inner(annotation: Any, part: str | int) -> Any:
    """The annotation of ``part`` (a field, a mapping key or a list index) inside a value of
    ``annotation``: profiles.input.min walks a model field, then a dict's values."""
    model = _model_in(annotation)
    if model is not None:
        info = model.model_fields.get(str(part))
        return info.annotation if info else None
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if origin is dict and len(args) == 2:
            return args[1]
        if origin in (list, tuple) and args and isinstance(part, int):
            return (
                args[0]
                if origin is list or args[-1] is Ellipsis
                else args[min(part, len(args) - 1)]
            )
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one model among ``annotation``'s alternatives (``Model | None``), if any."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _members(annotation: Any) -> list[Any]:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def kind_of(value: Any) -> str:
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


def shown(value: Any, quote: bool = True) -> str:
    """``value`` quoted back to the user, shortened; safe for any value YAML can make."""
    text = repr(value) if quote and isinstance(value, str) else _as_text(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 1]}…"


def _as_text(value: Any) -> str:
    # str() of an integer over 4300 digits raises, and YAML reads 0x… of any length
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return repr(value) if isinstance(value, list | dict | tuple) else str(value)
    except ValueError:  # such an integer inside a list or mapping
        return f"<a {kind_of(value)}>"
