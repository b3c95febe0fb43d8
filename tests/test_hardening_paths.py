"""Paths that are not what edgepipe needs: a FIFO or a device where a model file belongs, and
an output or cache folder that cannot be one. Each is one readable error naming the path and
the reason, before anything is read, hashed or run: never a hang, a traceback or exit 70.

The command-line cases run once, in parallel, for the whole module (each subprocess costs
~0.5 s of CPU importing edgepipe); they all stop before any stage runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgepipe.errors import RecipeError
from edgepipe.recipe import load_recipe
from edgepipe.user_folders import folder_problem

USAGE, RECIPE_INVALID = 2, 3  # edgepipe.errors.ExitCode
LONG_NAME = "n" * 300  # over NAME_MAX (255 bytes)
VALID = "version: 1\nname: ok\nstages:\n  model: {type: load, name: test_resnet}\n"


def _recipe(folder: Path, name: str, stage: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nstages:\n  model: {stage}\n")
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with FIFOs, a regular file and the recipes that name them."""
    root = tmp_path_factory.mktemp("paths")
    os.mkfifo(root / "weights.safetensors")  # nothing ever writes: a read would wait forever
    os.mkfifo(root / "model_fifo.onnx")
    (root / "model.onnx").write_bytes(b"not read: planning stops at its external data")
    os.mkfifo(root / "model.onnx.data")  # external data is found by name, not validated
    (root / "a_file").write_text("a regular file, not a folder\n")
    _recipe(root, "fifo_weights", "{type: load, name: test_resnet, weights: weights.safetensors}")
    _recipe(root, "dev_zero_weights", "{type: load, name: test_resnet, weights: /dev/zero}")
    _recipe(root, "fifo_onnx", "{type: load, source: onnx, path: model_fifo.onnx}")
    _recipe(root, "dev_zero_onnx", "{type: load, source: onnx, path: /dev/zero}")
    _recipe(root, "fifo_external_data", "{type: load, source: onnx, path: model.onnx}")
    (root / "valid.yaml").write_text(VALID)
    return root


def _cli(tree: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    environ.update(EDGEPIPE_CACHE=str(tree / "cache"), NO_COLOR="1", COLUMNS="200")
    environ.update(env or {})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgepipe", *args],
            cwd=tree,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:  # a FIFO read or an endless /dev/zero: fails the case
        return -1, f"edgepipe {' '.join(args)} hung: no answer in 60 s"
    return proc.returncode, " ".join(proc.stderr.split())  # unwrap the console's lines


def _cases(tree: Path) -> dict[str, tuple]:
    out = ("run", "valid.yaml", "--out")
    return {
        "plan-fifo-weights": ("plan", "fifo_weights.yaml"),
        "run-fifo-weights": ("run", "fifo_weights.yaml", "--out", str(tree / "out")),
        "plan-dev-zero-onnx": ("plan", "dev_zero_onnx.yaml"),
        "run-fifo-onnx": ("run", "fifo_onnx.yaml", "--out", str(tree / "out")),
        "plan-fifo-external-data": ("plan", "fifo_external_data.yaml"),
        "run-fifo-external-data": ("run", "fifo_external_data.yaml", "--out", str(tree / "o")),
        "out-regular-file": (*out, str(tree / "a_file")),
        "out-under-regular-file": (*out, str(tree / "a_file" / "sub")),
        "out-dev-null": (*out, "/dev/null"),
        "out-proc": (*out, "/proc/self/out"),
        "out-name-too-long": (*out, str(tree / LONG_NAME)),
        "cache-regular-file": ("plan", "valid.yaml", "--cache", str(tree / "a_file")),
        "cache-dev-null": ("run", "valid.yaml", "--cache", "/dev/null", "--out", str(tree / "o")),
        "cache-under-regular-file": ("plan", "valid.yaml", "--cache", str(tree / "a_file" / "c")),
        "validate-no-arguments": ("validate",),
    }


ENV_CASES = {
    "env-cache-regular-file": ("plan", "valid.yaml"),
    "env-cache-dev-null": ("report", "valid.yaml"),
}


@pytest.fixture(scope="module")
def results(tree: Path) -> dict[str, tuple[int, str]]:
    env = {"env-cache-regular-file": str(tree / "a_file"), "env-cache-dev-null": "/dev/null"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_cli, tree, *args) for name, args in _cases(tree).items()}
        futures |= {
            name: pool.submit(_cli, tree, *args, env={"EDGEPIPE_CACHE": env[name]})
            for name, args in ENV_CASES.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize(
    ("recipe", "fragment"),
    [
        ("fifo_weights", "weights.safetensors is a named pipe (FIFO), not a regular file"),
        ("dev_zero_weights", "/dev/zero is a character device, not a regular file"),
        ("fifo_onnx", "model_fifo.onnx is a named pipe (FIFO), not a regular file"),
        ("dev_zero_onnx", "/dev/zero is a character device, not a regular file"),
    ],
)
def test_a_special_file_as_a_model_file_is_refused_by_validate(tree, recipe, fragment) -> None:
    with pytest.raises(RecipeError, match="field '(weights|path)'") as caught:
        load_recipe(tree / f"{recipe}.yaml")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("case", "code", "fragments"),
    [
        ("plan-fifo-weights", RECIPE_INVALID, ["field 'weights'", "(FIFO), not a regular file"]),
        ("run-fifo-weights", RECIPE_INVALID, ["field 'weights'", "(FIFO), not a regular file"]),
        ("plan-dev-zero-onnx", RECIPE_INVALID, ["field 'path'", "/dev/zero is a character"]),
        ("run-fifo-onnx", RECIPE_INVALID, ["field 'path'", "(FIFO), not a regular file"]),
        ("plan-fifo-external-data", RECIPE_INVALID, ["model.onnx.data is a named pipe (FIFO)"]),
        ("run-fifo-external-data", RECIPE_INVALID, ["model.onnx.data is a named pipe (FIFO)"]),
        ("out-regular-file", USAGE, ["a_file is a regular file, not a folder", "--out"]),
        ("out-under-regular-file", USAGE, ["a_file is a regular file", "no folder can be made"]),
        ("out-dev-null", USAGE, ["/dev/null is a character device, not a folder"]),
        ("out-proc", USAGE, ["output folder /proc/self/out", "cannot create anything in"]),
        ("out-name-too-long", USAGE, ["is 300 bytes long; a file system allows 255"]),
        ("cache-regular-file", USAGE, ["cache folder", "a_file is a regular file", "--cache"]),
        ("cache-dev-null", USAGE, ["cache folder /dev/null", "character device, not a folder"]),
        ("cache-under-regular-file", USAGE, ["a_file is a regular file", "no folder can be"]),
        ("env-cache-regular-file", USAGE, ["cache folder", "a_file is a regular file"]),
        ("env-cache-dev-null", USAGE, ["cache folder /dev/null", "character device"]),
        ("validate-no-arguments", USAGE, ["no recipe given", "edgepipe validate"]),
    ],
)
def test_a_path_that_cannot_work_is_one_readable_error(results, case, code, fragments) -> None:
    if case == "out-proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    returncode, stderr = results[case]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert returncode == code, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


def test_no_output_folder_is_left_behind_by_a_refused_run(results, tree: Path) -> None:
    assert not (tree / "out").exists() and not (tree / "o").exists()


def test_probing_a_folder_leaves_nothing_behind(tmp_path: Path) -> None:
    assert folder_problem(tmp_path / "a" / "b", probe=True) is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert "is a regular file, not a folder" in folder_problem(tmp_path / "file" / "x")
