"""``matrix:``: one recipe over several models/precisions, expanded into one stage per cell.

A stage that mentions ``${axis}`` in any string — or takes an input that varies over an axis —
is repeated for each value, with ids like ``onnx[resnet50]`` (``onnx[resnet50,int8]`` for two
axes). Inputs follow the cell; ``inputs: ["onnx[*]"]`` collects every cell of a stage, which
is how one benchmark covers them all. Each cell is validated and cached on its own.
"""

from __future__ import annotations

__all__ = ["expand_matrix"]

import itertools
import re
from typing import Any

from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.recipe_limits import (
    MAX_EXPANDED_ID_LENGTH,
    MAX_EXPANDED_STAGES,
    MAX_MATRIX_VALUES,
    MAX_YAML_NODES,
)
from edgepipe.recipe_names import expanded_id_too_long
from edgepipe.yaml_lines import LineMap

_REF = re.compile(r"\$\{(\w+)\}")
_VALUE = re.compile(r"[A-Za-z0-9_.=-]+")
_INPUT_KEYS = ("input", "inputs", "reference")
_SATURATED = 10**12  # stage counts above this are reported as "more than"


def expand_matrix(data: dict[str, Any], lines: LineMap, path) -> dict[str, Any]:
    """``data`` with matrix stages expanded (aliases registered on ``lines`` for messages)."""
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return data
    _refuse_written_brackets(stages, lines, path)
    _refuse_too_many_stages(len(stages), "", lines.line_of(("stages",)), path)
    matrix = data.get("matrix")
    if not matrix:
        _refuse_references_without_matrix(stages, lines, path)
        return data
    axes = _checked_axes(matrix, lines, path)
    varies = _axes_of_stages(stages, axes, lines, path)
    _check_expansion_size(stages, axes, varies, lines, path)  # before making anything
    expanded: dict[str, Any] = {}
    for stage_id, spec in stages.items():
        for cell in _cells(varies[stage_id], axes):
            new_id = _cell_id(stage_id, cell)
            expanded[new_id] = _substitute(spec, cell, varies, axes)
            lines.alias(("stages", new_id), ("stages", stage_id))
    return {**data, "stages": expanded}


def _refuse_written_brackets(stages: dict, lines: LineMap, path) -> None:
    for stage_id in stages:
        if isinstance(stage_id, str) and ("[" in stage_id or "]" in stage_id):
            msg = (
                f"invalid stage id {stage_id!r}: use letters, digits, '_' and '-' only "
                "(ids with [...] are made by matrix:)"
            )
            raise RecipeError(
                path, [RecipeIssue(msg, lines.line_of(("stages", stage_id)), stage_id)]
            )


def _refuse_references_without_matrix(stages: dict, lines: LineMap, path) -> None:
    for stage_id, spec in stages.items():
        names = _references(spec)
        if names:
            msg = (
                f"${{{names[0]}}} refers to a matrix axis, but the recipe has no `matrix:`; "
                f"add `matrix: {{{names[0]}: [...]}}` or write the value itself"
            )
            line = lines.line_of(("stages", stage_id))
            raise RecipeError(path, [RecipeIssue(msg, line, str(stage_id))])


def _refuse_too_many_stages(count: int, detail: str, line: int | None, path) -> None:
    if count > MAX_EXPANDED_STAGES:
        amount = f"more than {_SATURATED:,}" if count >= _SATURATED else f"{count:,}"
        msg = (
            f"the recipe would have {amount} stages{detail}; at most {MAX_EXPANDED_STAGES:,} "
            "are allowed (each is validated, planned and cached on its own)"
        )
        raise RecipeError(path, [RecipeIssue(msg, line, field="matrix" if detail else None)])


def _checked_axes(matrix: Any, lines: LineMap, path) -> dict[str, list]:
    problems = []
    if not isinstance(matrix, dict):
        problems.append(
            RecipeIssue(
                "matrix must map axis names to lists of values",
                lines.line_of(("matrix",)),
                field="matrix",
            )
        )
    else:
        for axis, values in matrix.items():
            problem = _axis_problem(axis, values)
            if problem:
                line = lines.line_of(("matrix", axis))
                problems.append(RecipeIssue(problem, line, field=f"matrix.{axis}"))
    if problems:
        raise RecipeError(path, problems)
    return matrix


def _axis_problem(axis: Any, values: Any) -> str | None:
    if not isinstance(values, list) or not values or not all(_plain(v) for v in values):
        return (
            f"axis '{axis}' needs a non-empty list of plain values (letters, digits, "
            "'_', '.', '=', '-'; true/false must be quoted)"
        )
    if len(values) > MAX_MATRIX_VALUES:
        return f"axis '{axis}' has {len(values)} values; at most {MAX_MATRIX_VALUES} are allowed"
    texts = [str(v) for v in values]
    twice = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
    if twice is not None:  # two cells would get the same id
        return f"axis '{axis}' lists the value '{twice}' twice"
    return None


def _plain(value: Any) -> bool:
    # a boolean would be True/False in ids, not what was written
    ok = isinstance(value, str | int | float) and not isinstance(value, bool)
    return ok and _VALUE.fullmatch(str(value)) is not None


def _check_expansion_size(stages: dict, axes: dict, varies: dict, lines: LineMap, path) -> None:
    """Refuse, from the axes' sizes alone, a matrix too big to expand."""
    if not stages:
        return
    cells = {sid: _capped_product(len(axes[a]) for a in varies[sid]) for sid in stages}
    biggest = max(stages, key=lambda sid: cells[sid])
    product = " × ".join(f"{a}: {len(axes[a])} values" for a in varies[biggest][:4])
    product += " × …" if len(varies[biggest]) > 4 else ""
    detail = f" ('{biggest}' alone repeats for {product})"
    total = min(sum(cells.values()), _SATURATED)
    _refuse_too_many_stages(total, detail, lines.line_of(("matrix",)), path)
    for sid in stages:  # the longest id a cell can have: the longest value on each axis
        longest = {a: max(axes[a], key=lambda v: len(str(v))) for a in varies[sid]}
        example = _cell_id(sid, longest)
        if len(example) > MAX_EXPANDED_ID_LENGTH:
            msg = expanded_id_too_long(sid, example)
            raise RecipeError(path, [RecipeIssue(msg, lines.line_of(("stages", sid)), sid)])
    # every cell copies its spec, and "id[*]" becomes every cell of id: bound the result too
    values = sum(cells[sid] * _expanded_size(spec, cells) for sid, spec in stages.items())
    if values > MAX_YAML_NODES:
        msg = (
            f"the matrix expands the stages to {values:,} values; at most {MAX_YAML_NODES:,} "
            "are allowed: use fewer values per axis"
        )
        raise RecipeError(path, [RecipeIssue(msg, lines.line_of(("matrix",)), field="matrix")])


def _capped_product(sizes) -> int:
    """The product, stopping at _SATURATED: thousands of axes would make a huge number."""
    product = 1
    for size in sizes:
        product = min(product * size, _SATURATED)
    return product


def _expanded_size(value: Any, cells: dict) -> int:
    if isinstance(value, dict):
        return 1 + sum(_expanded_size(v, cells) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_expanded_size(v, cells) for v in value)
    if isinstance(value, str) and value.endswith("[*]"):
        return max(1, cells.get(value[:-3], 1))
    return 1


def _axes_of_stages(stages: dict, axes: dict, lines: LineMap, path) -> dict[str, list[str]]:
    own = {sid: set(_references(spec)) for sid, spec in stages.items()}
    for sid, names in own.items():
        unknown = sorted(names - set(axes))
        if unknown:
            known = ", ".join(map(str, axes))
            msg = f"${{{unknown[0]}}} is not a matrix axis (axes: {known})"
            raise RecipeError(path, [RecipeIssue(msg, lines.line_of(("stages", sid)), sid)])
    varies = {sid: set(names) for sid, names in own.items()}
    downstream: dict[str, list[str]] = {sid: [] for sid in stages}
    for sid, spec in stages.items():
        for upstream in _upstreams(spec):
            if upstream in downstream:  # not "id[*]", which collects rather than inherits
                downstream[upstream].append(sid)
    # inherit axes from inputs: a stage whose axes grew passes them on (cycles are caught
    # later); each stage gains each axis at most once, so this ends after edges × axes steps
    pending = list(stages)
    while pending:
        upstream = pending.pop()
        for sid in downstream[upstream]:
            if not varies[upstream] <= varies[sid]:
                varies[sid] |= varies[upstream]
                pending.append(sid)
    return {sid: [a for a in axes if a in names] for sid, names in varies.items()}


def _references(value: Any) -> list[str]:
    if isinstance(value, str):
        return _REF.findall(value)
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _upstreams(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return []
    found = []
    for key in _INPUT_KEYS:
        value = spec.get(key)
        found += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return found


def _cells(stage_axes: list[str], axes: dict) -> list[dict[str, Any]]:
    return [
        dict(zip(stage_axes, combo, strict=True))
        for combo in itertools.product(*(axes[a] for a in stage_axes))
    ]


def _cell_id(stage_id: str, cell: dict[str, Any]) -> str:
    return f"{stage_id}[{','.join(str(v) for v in cell.values())}]" if cell else stage_id


def _substitute(spec: Any, cell: dict[str, Any], varies: dict, axes: dict) -> Any:
    if not isinstance(spec, dict):
        return spec
    result = {}
    for key, value in spec.items():
        if key in _INPUT_KEYS:
            result[key] = _rewire(value, cell, varies, axes)
        else:
            result[key] = _fill(value, cell)
    return result


def _fill(value: Any, cell: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole and whole.group(1) in cell:  # keep the value's own type (numbers stay numbers)
            return cell[whole.group(1)]
        return _REF.sub(lambda m: str(cell.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: _fill(v, cell) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, cell) for v in value]
    return value


def _rewire(value: Any, cell: dict[str, Any], varies: dict, axes: dict) -> Any:
    """Point an input at the same cell of its upstream; ``id[*]`` means every cell of it."""
    if isinstance(value, list):
        return [item for v in value for item in _as_list(_rewire(v, cell, varies, axes))]
    if not isinstance(value, str):
        return value
    if value.endswith("[*]"):
        upstream = value[:-3]
        shared = {a: v for a, v in cell.items() if a in varies.get(upstream, [])}
        return [
            _cell_id(upstream, c)
            for c in _cells(varies.get(upstream, []), axes)
            if all(c[a] == v for a, v in shared.items())
        ]
    if value not in varies:
        return value  # unknown ids are reported by the graph, with a suggestion
    return _cell_id(value, {a: cell[a] for a in varies[value]})


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]
