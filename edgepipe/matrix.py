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
from edgepipe.yaml_lines import LineMap

_REF = re.compile(r"\$\{(\w+)\}")
_VALUE = re.compile(r"[A-Za-z0-9_.=-]+")
_INPUT_KEYS = ("input", "inputs", "reference")


def expand_matrix(data: dict[str, Any], lines: LineMap, path) -> dict[str, Any]:
    """``data`` with matrix stages expanded (aliases registered on ``lines`` for messages)."""
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return data
    _refuse_written_brackets(stages, lines, path)
    matrix = data.get("matrix")
    if not matrix:
        return data
    axes = _checked_axes(matrix, lines, path)
    varies = _axes_of_stages(stages, axes, lines, path)
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
            if (
                not isinstance(values, list)
                or not values
                or not all(
                    isinstance(v, str | int | float) and _VALUE.fullmatch(str(v)) for v in values
                )
            ):
                problems.append(
                    RecipeIssue(
                        f"axis '{axis}' needs a non-empty list of plain values (letters, digits, "
                        "'_', '.', '=', '-')",
                        lines.line_of(("matrix", axis)),
                        field=f"matrix.{axis}",
                    )
                )
    if problems:
        raise RecipeError(path, problems)
    return matrix


def _axes_of_stages(stages: dict, axes: dict, lines: LineMap, path) -> dict[str, list[str]]:
    own = {sid: set(_references(spec)) for sid, spec in stages.items()}
    for sid, names in own.items():
        unknown = sorted(names - set(axes))
        if unknown:
            raise RecipeError(
                path,
                [
                    RecipeIssue(
                        f"${{{unknown[0]}}} is not a matrix axis (axes: {', '.join(axes)})",
                        lines.line_of(("stages", sid)),
                        sid,
                    )
                ],
            )
    varies = {sid: set(names) for sid, names in own.items()}
    changed = True
    while changed:  # inherit axes from inputs until nothing changes (cycles are caught later)
        changed = False
        for sid, spec in stages.items():
            for upstream in _upstreams(spec):
                inherited = varies.get(upstream, set()) - varies[sid]
                if inherited and not upstream.endswith("[*]"):
                    varies[sid] |= inherited
                    changed = True
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
