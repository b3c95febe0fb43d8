"""Refuse the lax coercions of Pydantic that hide mistakes in a recipe.

In its default (lax) mode Pydantic accepts ``true`` for an integer (it is 1), ``"yes"`` or
``1`` for a boolean, ``"3"`` and ``3.0`` for an integer and ``true`` for ``Literal[1]``; in a
recipe each of these is far more likely a slip (a value in the wrong field, a quoted number, a
YAML 1.1 'yes') than a wish. Strict mode for whole models is not an option: strings must still
become paths and enums. So a before-validator looks at each field's annotation and refuses
only a scalar of the wrong kind that lax mode would have converted, before Pydantic sees it.
Everything else is left to Pydantic's own checks and messages.
"""

from __future__ import annotations

__all__ = ["FieldError", "StrictScalars", "lax_coercion"]

import datetime
import math
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, model_validator

_ANY = "any"  # a type with its own conversion from text (Path, an Enum…): left to Pydantic
_LAX_TARGETS = {  # value kind → target kinds that lax mode converts it to
    bool: {int, float},
    str: {int, float, bool},
    int: {bool},
    float: {int, bool},
}
_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_EXPECTED = {
    bool: "a valid boolean (true or false)",
    int: "a valid integer",
    float: "a valid number",
    str: "text",
}

SubPath = tuple[str | int, ...]


class FieldError(ValueError):
    """Raised by a spec's cross-field check to point the error at one field (or a dotted path
    into a nested one, ``openvino.hint``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class StrictScalars(BaseModel):
    """Base model whose fields refuse scalars of the wrong kind (see the module docstring)."""

    # a model-level check: Pydantic allows no field "before" validator on a union's tag field
    @model_validator(mode="before")
    @classmethod
    def _refuse_lax_coercion(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = _mapping_problem(data, cls)
            if found is not None:
                where, message = found
                raise FieldError(".".join(str(part) for part in where), message)
        return data


def lax_coercion(value: Any, annotation: Any) -> tuple[SubPath, str] | None:
    """``(where, message)`` for the first value Pydantic would coerce against its annotation."""
    annotation = _unwrap(annotation)
    if value is None or annotation is Any:
        return None
    if isinstance(value, bytes | set | frozenset | datetime.date):
        return (), _yaml_only_problem(value)
    if isinstance(value, bool | int | float | str):
        return _scalar_problem(value, annotation)
    if isinstance(value, dict):
        return _mapping_problem(value, annotation)
    if isinstance(value, list):
        return _list_problem(value, annotation)
    return None


def _scalar_problem(value: bool | int | float | str, annotation: Any) -> tuple[SubPath, str] | None:
    kinds = _scalar_kinds(annotation)
    kind = next(k for k in (bool, int, float, str) if isinstance(value, k))  # subclasses too
    if _ANY in kinds:
        return None
    if kind is float and float in kinds and not math.isfinite(value):
        return (), f"Input should be a finite number (got {value})"
    if kind in kinds or (kind is int and float in kinds):
        return None
    if not (_LAX_TARGETS[kind] & kinds):
        return None  # Pydantic refuses it anyway, with its own message
    expected = " or ".join(_expected(annotation))
    hint = "; write numbers and true/false without quotes" if _looks_unquotable(value) else ""
    return (), f"Input should be {expected}, not {_KIND_NAMES[kind]} (got {_shown(value)}){hint}"


def _looks_unquotable(value: Any) -> bool:
    """A string that would be a number or a boolean without its quotes."""
    if not isinstance(value, str):
        return False
    if value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _yaml_only_problem(value: bytes | set | frozenset | datetime.date) -> str:
    """Values only an explicit tag or a date-like scalar makes, which Pydantic would convert
    (bytes to text, a set to a list in no particular order) or reject without saying why."""
    if isinstance(value, datetime.date):
        return f"YAML reads {value.isoformat()} as a date: quote it if it is meant as text"
    if isinstance(value, bytes):
        return "Input should be text, not binary data (a !!binary value)"
    return "Input should be a list, not a set (a !!set has no order)"


def _mapping_problem(value: dict, annotation: Any) -> tuple[SubPath, str] | None:
    model = _only_member(annotation, lambda m: isinstance(m, type) and issubclass(m, BaseModel))
    if model is not None:
        for key, item in value.items():
            field = model.model_fields.get(key) if isinstance(key, str) else None
            found = lax_coercion(item, field.annotation) if field else None
            if found:
                return (key, *found[0]), found[1]
        return None
    mapping = _only_member(annotation, lambda m: get_origin(m) is dict)
    if mapping is None or len(get_args(mapping)) != 2:
        return None
    for key, item in value.items():
        found = lax_coercion(item, get_args(mapping)[1])
        if found:
            return (str(key), *found[0]), found[1]
    return None


def _list_problem(value: list, annotation: Any) -> tuple[SubPath, str] | None:
    sequence = _only_member(annotation, lambda m: get_origin(m) in (list, tuple, set, frozenset))
    if sequence is None:
        return None
    args = get_args(sequence)
    for index, item in enumerate(value):
        if get_origin(sequence) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if index >= len(args):
                return None  # too many items: Pydantic says so
            item_type = args[index]
        else:
            item_type = args[0] if args else Any
        found = lax_coercion(item, item_type)
        if found:
            return (index, *found[0]), found[1]
    return None


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (``None`` left out), or the annotation itself."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for a in get_args(annotation) if a is not type(None) for m in _members(a)]
    return [annotation]


def _only_member(annotation: Any, wanted) -> Any:
    """The one alternative that ``wanted`` accepts; None when there are none or several."""
    matches = [m for m in _members(annotation) if wanted(m)]
    return matches[0] if len(matches) == 1 else None


def _scalar_kinds(annotation: Any) -> set:
    kinds: set = set()
    for member in _members(annotation):
        if get_origin(member) is Literal:
            kinds |= {type(v) for v in get_args(member)}
        elif member in (bool, int, float, str):
            kinds.add(member)
        elif get_origin(member) is None and not (
            isinstance(member, type) and issubclass(member, BaseModel)
        ):
            kinds.add(_ANY)  # Path, an Enum, Any…: not ours to judge
    return kinds


def _expected(annotation: Any) -> list[str]:
    phrases = []
    for member in _members(annotation):
        if get_origin(member) is Literal:
            phrases += [_shown(v) for v in get_args(member)]
        elif member in _EXPECTED:
            phrases.append(_EXPECTED[member])
    return phrases or ["a different kind of value"]


def _shown(value: Any) -> str:
    """A value as it would be written in YAML (``true``, not ``True``), shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:  # str() refuses > 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else f"{text[:59]}…"
