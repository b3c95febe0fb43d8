"""Every recipe in tests/bad_recipes/ must fail ``edgepipe validate`` with one readable error.

Each file opens with comment lines saying what the error must look like::

    # expect: <fragment>   stderr contains this (required)
    # line: N              stderr names "<file name>:N:" (required)
    # stage: ID            stderr contains "stage 'ID'"
    # field: NAME          stderr contains "field 'NAME'"
    # absent: <fragment>   stderr does not contain this (repeatable)
    # xfail: <reason>      a known edgepipe bug: the case is xfail(strict=True); delete the line
                           once edgepipe is fixed

A file that cannot hold comments (the empty file) keeps them in ``<file name>.expect`` beside it.
Files the recipes reference (``weights:``, ``path:``) are under tests/bad_recipes/files/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

BAD_RECIPES = Path(__file__).parent / "bad_recipes"
RECIPE_FILES = sorted(BAD_RECIPES.glob("*.yaml"))
RECIPE_INVALID = 3  # edgepipe.errors.ExitCode.RECIPE_INVALID
_HEADER = re.compile(r"#\s*(\w+):\s?(.*)")
_KEYS = {"expect", "line", "stage", "field", "absent", "xfail"}


@dataclass(frozen=True)
class Expectation:
    expect: str
    line: int
    stage: str | None = None
    field: str | None = None
    absent: tuple[str, ...] = ()
    xfail: str | None = None
    problems: tuple[str, ...] = ()


def read_expectation(recipe: Path) -> Expectation:
    """Parse the leading ``# key: value`` lines (of the file, or of its ``.expect`` sidecar)."""
    sidecar = recipe.with_name(recipe.name + ".expect")
    source = sidecar if sidecar.is_file() else recipe
    text = source.read_bytes().decode("utf-8", errors="replace")
    values: dict[str, list[str]] = {}
    problems = []
    for line in text.splitlines():
        match = _HEADER.fullmatch(line.strip())
        if not match:
            break
        key, value = match.group(1), match.group(2).strip()
        if key not in _KEYS:
            problems.append(f"unknown header key '# {key}:' (known: {', '.join(sorted(_KEYS))})")
        values.setdefault(key, []).append(value)
    for key in ("expect", "line"):
        if key not in values:
            problems.append(f"missing '# {key}:' header line")
    for key, found in values.items():
        if key != "absent" and len(found) > 1:
            problems.append(f"'# {key}:' given {len(found)} times")

    def one(key: str) -> str | None:
        return values[key][0] if key in values else None

    line = one("line") or "0"
    if not line.isdigit():
        problems.append(f"'# line: {line}' is not a line number")
    return Expectation(
        expect=one("expect") or "",
        line=int(line) if line.isdigit() else 0,
        stage=one("stage"),
        field=one("field"),
        absent=tuple(values.get("absent", [])),
        xfail=one("xfail"),
        problems=tuple(problems),
    )


CASES = {recipe.name: read_expectation(recipe) for recipe in RECIPE_FILES}


def _param(recipe: Path) -> object:
    expectation = CASES[recipe.name]
    marks = [pytest.mark.xfail(reason=expectation.xfail, strict=True)] if expectation.xfail else []
    return pytest.param(recipe, id=recipe.stem, marks=marks)


@dataclass(frozen=True)
class Result:
    returncode: int
    stderr: str


def _validate(recipe: Path, cwd: Path, env: dict[str, str]) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe", "validate", str(recipe)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """``edgepipe validate`` on every recipe, run in parallel once for the whole module."""
    tmp_path = tmp_path_factory.mktemp("bad_recipes")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(EDGEPIPE_CACHE=str(tmp_path / "cache"), PYTHONIOENCODING="utf-8", NO_COLOR="1")
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        futures = {r.name: pool.submit(_validate, r, tmp_path, env) for r in RECIPE_FILES}
        return {name: future.result() for name, future in futures.items()}


def test_corpus_has_at_least_30_recipes() -> None:
    assert len(RECIPE_FILES) >= 30, [r.name for r in RECIPE_FILES]


@pytest.mark.parametrize("recipe", [_param(r) for r in RECIPE_FILES])
def test_bad_recipe_is_reported(recipe: Path, results: dict[str, Result]) -> None:
    expected = CASES[recipe.name]
    assert not expected.problems, f"{recipe.name}: bad header: {'; '.join(expected.problems)}"
    result = results[recipe.name]
    stderr = result.stderr
    context = f"stderr of `edgepipe validate {recipe.name}`:\n{stderr}"
    assert "Traceback" not in stderr, context
    assert result.returncode == RECIPE_INVALID, f"exit code {result.returncode}; {context}"
    assert "error:" in stderr, context
    assert f"{recipe.name}:{expected.line}:" in stderr, context
    assert expected.expect in stderr, context
    if expected.stage is not None:
        assert f"stage '{expected.stage}'" in stderr, context
    if expected.field is not None:
        assert f"field '{expected.field}'" in stderr, context
    for fragment in expected.absent:
        assert fragment not in stderr, context
