"""Fuzzing: a mutated shipped recipe either validates or fails with a RecipeError, quickly.

A recipe is untrusted input (CI validates a pull request's recipes), so no text — truncated,
reordered, mistyped, nested 10,000 deep, full of aliases or odd scalars — may reach the user as
a traceback or a hang. The mutations start from pipelines/*.yaml, so most examples are near
misses of real recipes and reach deep into validation, not just the YAML parser.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.errors import RecipeError
from edgepipe.graph import PipelineGraph
from edgepipe.recipe import load_recipe, parse_recipe

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
RECIPES = {path.name: path.read_text() for path in sorted(PIPELINES.glob("*.yaml"))}
SECONDS_PER_EXAMPLE = 1.0  # the slowest honest recipe validates in ~20 ms

# derandomized and without a database: the same examples on every machine, nothing written
FUZZ = settings(
    max_examples=300,
    deadline=None,  # timed by hand below: a deadline error would hide which mutation was slow
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ODD_SCALARS = [
    "~", "null", "yes", "no", "on", "off", "y", "n", "True", "FALSE", "1", "0", "-1", "3.0",
    "1e999", "-.inf", ".nan", "0x" + "f" * 4000, "9" * 5000, "0o777", "0b101", "1_000",
    "2024-13-45", "2024-02-30 25:61:61", "12:30:45", "!!binary aGVsbG8=", "!!binary %%%",
    "!!python/object/apply:os.system ['true']", "!!set {a, b}", "!!omap [a: 1]",
    "!!int abc", "!!float x", "!!str 17", "!!null ''", "!!bool maybe", "!!timestamp x",
    '"\\x00"', "'\\t'", '"' + "x" * 3000 + '"', "[]", "{}", "[[]]", "{a: {b: {c: d}}}",
    "*nowhere", "&a", "&a *a", "? [a, b]", "|\n  block", ">-\n  folded", "- item",
    "\\u00e9", "é", "\U0001f600", "a: b: c", "{a: 1, a: 2}", "[1, 2, 3, 4, 5]",
]  # fmt: skip

TOKENS = list(":-[]{}&*!|>'\"#%@`,? \t\n\\") + ["  ", "<<: ", "*x", "&x ", "${model}"]


def check(text: str | bytes, name: str) -> None:
    """Validate like `edgepipe validate` does: a recipe, or exactly one kind of error. Bytes go
    through a file, to reach the reading and decoding too."""
    start = time.perf_counter()
    try:
        if isinstance(text, bytes):
            with tempfile.TemporaryDirectory() as folder:
                recipe = Path(folder) / name
                recipe.write_bytes(text)
                PipelineGraph(load_recipe(recipe))
        else:
            PipelineGraph(parse_recipe(text, PIPELINES / name))
    except RecipeError as exc:
        message = str(exc)
        assert message.strip() and "Traceback" not in message
        assert len(message) < 20_000, f"an unreadable message of {len(message)} characters"
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_EXAMPLE, f"took {elapsed:.2f} s"


# --- mutations of the text -------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.split("\n")


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    kind = draw(
        st.sampled_from(
            ["delete", "duplicate", "swap", "flip", "insert", "value", "anchor", "nest", "cut"]
        )
    )
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "cut":  # a truncated download or a half-saved file
        return text[: draw(st.integers(0, len(text)))]
    elif kind in ("flip", "insert"):
        position = draw(st.integers(0, len(text)))
        token = draw(st.sampled_from(TOKENS) | st.characters(codec="utf-8"))
        skip = 1 if kind == "flip" else 0
        return text[:position] + token + text[position + skip :]
    elif kind == "value":  # an odd scalar where a value was
        lines[i] = _replace_value(lines[i], draw(st.sampled_from(ODD_SCALARS)))
    elif kind == "anchor":  # an anchor on one value, aliases to it elsewhere (maybe inside it)
        lines[i] = _replace_value(lines[i], "&x " + _value_of(lines[i]))
        lines[j] = _replace_value(lines[j], draw(st.sampled_from(["*x", "[*x, *x]", "{k: *x}"])))
    elif kind == "nest":
        depth = draw(st.sampled_from([10, 49, 50, 51, 200, 10_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        lines[i] = _replace_value(lines[i], opener * depth + "1" + closer * depth)
    return "\n".join(lines)


def _value_of(line: str) -> str:
    return line.split(": ", 1)[1] if ": " in line else ""


def _replace_value(line: str, value: str) -> str:
    if ": " in line:
        return line.split(": ", 1)[0] + ": " + value
    if line.strip().startswith("- "):
        return line[: line.index("- ") + 2] + value
    return line + " " + value


@given(data=st.data(), name=st.sampled_from(sorted(RECIPES)))
@FUZZ
def test_mutated_text_is_a_recipe_or_a_recipe_error(data: st.DataObject, name: str) -> None:
    text = RECIPES[name]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        text = data.draw(text_mutation(text), label="mutated")
    check(text, name)


@given(data=st.data(), name=st.sampled_from(sorted(RECIPES)))
@settings(FUZZ, max_examples=100)
def test_mutated_bytes_are_a_recipe_or_a_recipe_error(data: st.DataObject, name: str) -> None:
    raw = bytearray(RECIPES[name].encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        position = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[position : position + 1] = data.draw(st.binary(min_size=0, max_size=3), label="bytes")
    check(bytes(raw), name)


# --- mutations of the parsed data ------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "true", "yes", "3", "3.5", "${model}", "x[*]", "../../etc/passwd"])
)
VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@given(data=st.data(), name=st.sampled_from(sorted(RECIPES)))
@FUZZ
def test_mutated_data_is_a_recipe_or_a_recipe_error(data: st.DataObject, name: str) -> None:
    recipe = yaml.safe_load(RECIPES[name])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(recipe)[1:]), label="path")
        *parents, last = path
        holder = recipe
        for part in parents:
            holder = holder[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]), label="action")
        if action == "delete":
            del holder[last]
        elif action == "add" and isinstance(holder, dict):
            holder[data.draw(st.text(max_size=12), label="key")] = data.draw(VALUES)
        else:
            holder[last] = data.draw(VALUES, label="value")
        if not _paths(recipe)[1:]:
            break
    check(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False), name)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_recipes_pass_the_same_check(name: str) -> None:
    """The unmutated recipes validate: the fuzz tests start from valid input."""
    PipelineGraph(parse_recipe(RECIPES[name], PIPELINES / name))
