"""Every recipe in tests/bad_recipes/ must fail ``edgepipe validate`` with one readable error.

Every case is validated in this process (what ``edgepipe validate`` calls), quickly; a subset,
all the hostile ones among them, also through the CLI in a subprocess, for the exit code and
the absence of a traceback. Recipes that cannot be files in a folder (a FIFO, /dev/zero, a
file over the size bound, a thousand stages) are tests of their own at the end.

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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgepipe.errors import RecipeError
from edgepipe.graph import PipelineGraph
from edgepipe.recipe import load_recipe
from edgepipe.recipe_limits import MAX_EXPANDED_STAGES, MAX_RECIPE_BYTES

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
    seconds: float = 0.0


# Through the CLI too: the hostile cases (where a hang or a crash would show), and a sample of
# the rest; every case runs in-process, so the sample only has to prove the CLI's part.
# (each subprocess costs ~0.4 s of CPU importing edgepipe, and CI has two cores)
HOSTILE = ("alias_", "nesting_", "integer_", "tag_", "date_", "matrix_too_", "non_utf8", "empty")
CLI_FILES = [
    recipe
    for index, recipe in enumerate(RECIPE_FILES)
    if recipe.name.startswith(HOSTILE) or index % 12 == 0
]
SECONDS_PER_RECIPE = 1.0  # in-process; the slowest case (alias expansion) takes ~0.2 s


def validate_in_process(recipe: Path) -> Result:
    """What `edgepipe validate` does, without its process: stderr as the CLI would print it."""
    start = time.perf_counter()
    try:
        PipelineGraph(load_recipe(recipe))
    except RecipeError as exc:
        return Result(exc.exit_code, f"error: {exc}", time.perf_counter() - start)
    return Result(0, "", time.perf_counter() - start)


def _validate(recipe: Path, cwd: Path, env: dict[str, str], command: str = "validate") -> Result:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe", command, str(recipe)],
        cwd=cwd,
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stderr, time.perf_counter() - start)


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(EDGEPIPE_CACHE=str(tmp_path / "cache"), PYTHONIOENCODING="utf-8", NO_COLOR="1")
    return env


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """``edgepipe validate`` on the CLI subset, run in parallel once for the whole module."""
    tmp_path = tmp_path_factory.mktemp("bad_recipes")
    env = _cli_env(tmp_path)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        futures = {r.name: pool.submit(_validate, r, tmp_path, env) for r in CLI_FILES}
        return {name: future.result() for name, future in futures.items()}


def test_corpus_has_at_least_200_recipes() -> None:
    assert len(RECIPE_FILES) >= 200, [r.name for r in RECIPE_FILES]


def check_reported(recipe: Path, result: Result) -> None:
    expected = CASES[recipe.name]
    assert not expected.problems, f"{recipe.name}: bad header: {'; '.join(expected.problems)}"
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


@pytest.mark.parametrize("recipe", [_param(r) for r in RECIPE_FILES])
def test_bad_recipe_is_reported(recipe: Path) -> None:
    result = validate_in_process(recipe)
    check_reported(recipe, result)
    assert result.seconds < SECONDS_PER_RECIPE, f"{recipe.name} took {result.seconds:.2f} s"


@pytest.mark.parametrize("recipe", [_param(r) for r in CLI_FILES])
def test_bad_recipe_is_reported_by_the_cli(recipe: Path, cli_results: dict[str, Result]) -> None:
    check_reported(recipe, cli_results[recipe.name])


# --- recipes that cannot be files in the corpus ---------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)  # nothing ever writes to it: a blocking open or read would wait forever
    result = _validate(fifo, tmp_path, _cli_env(tmp_path), command)
    assert result.returncode == RECIPE_INVALID, result.stderr
    assert "is a named pipe (FIFO), not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_zero_is_refused_not_read(tmp_path: Path) -> None:
    result = _validate(Path("/dev/zero"), tmp_path, _cli_env(tmp_path))  # endless zero bytes
    assert result.returncode == RECIPE_INVALID, result.stderr
    assert "/dev/zero: is a character device, not a regular file" in result.stderr


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "recipe.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(RecipeError, match="is a character device, not a regular file"):
        load_recipe(link)


def test_a_file_over_the_size_bound_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    valid = "version: 1\nname: big\nstages:\n  model: {type: load, name: resnet18}\n"
    comment = "# " + "x" * 1021 + "\n"  # 1 KiB lines
    recipe.write_text(valid + comment * (MAX_RECIPE_BYTES // len(comment) + 1))
    with pytest.raises(RecipeError, match="larger than 1024 KiB"):
        load_recipe(recipe)
    recipe.write_text(valid + comment * (MAX_RECIPE_BYTES // len(comment) - 1))
    assert load_recipe(recipe).name == "big"  # just under the bound: read in full


def test_too_many_stages_are_refused_before_validating_them() -> None:
    from edgepipe.recipe import parse_recipe

    stages = "".join(f"  s{i}: {{type: load, name: r}}\n" for i in range(MAX_EXPANDED_STAGES + 1))
    with pytest.raises(RecipeError, match="would have 1,001 stages; at most 1,000"):
        parse_recipe("version: 1\nname: big\nstages:\n" + stages)


def test_a_matrix_at_the_stage_bound_is_accepted() -> None:
    from edgepipe.recipe import parse_recipe

    axes = {"a": [f"a{i}" for i in range(100)], "b": [f"b{i}" for i in range(10)]}
    matrix = "".join(f"  {axis}: [{', '.join(values)}]\n" for axis, values in axes.items())
    text = "version: 1\nname: big\nmatrix:\n" + matrix
    text += 'stages:\n  model: {type: load, name: "${a}-${b}"}\n'
    assert len(PipelineGraph(parse_recipe(text)).recipe.stages) == MAX_EXPANDED_STAGES


def test_ten_thousand_unknown_inputs_are_counted_not_each_compared() -> None:
    """A "did you mean" for each of 10,000 unknown inputs against 1,000 ids took minutes;
    the first 20 are listed (with their hint), the rest counted."""
    from edgepipe.recipe import parse_recipe

    def stage(i: int) -> str:
        return (
            f"  s{i}: {{type: benchmark, inputs: [{', '.join(f'u{i}_{j}' for j in range(10))}]}}\n"
        )

    text = "version: 1\nname: big\nstages:\n" + "".join(stage(i) for i in range(1000))
    start = time.perf_counter()
    with pytest.raises(RecipeError) as caught:
        PipelineGraph(parse_recipe(text))
    seconds = time.perf_counter() - start
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 + 20 + 1, lines[:3]  # the header, 20 listed, the count
    assert lines[1].endswith("stage 's0': field 'inputs': unknown input stage 'u0_0'")
    assert lines[-1].endswith("and 9,980 more unknown input stage(s): 10,000 in all")
    assert seconds < 20, f"{seconds:.1f} s"  # generous: 2 slow cores; it was > 120 s
