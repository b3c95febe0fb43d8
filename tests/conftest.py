"""Shared helpers: run the real CLI in a subprocess against a private cache and output folder."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = {
    "torch",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxsim",
    "openvino",
    "nncf",
    "numpy",
    "torchao",
    "executorch",
}

# benchmark settings for tests that check rows and parity, not numbers: short timing windows
QUICK_TIMING = "warmup_seconds: 0.2, window_seconds: 0.2, max_seconds: 2"


class Workspace:
    """A recipe folder, a cache and an output folder, all under one tmp_path."""

    def __init__(self, root: Path):
        self.root = root
        self.cache = root / "cache"
        self.out = root / "out"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "EDGEPIPE_CACHE": str(self.cache),
                # never reach a hub: tests must behave the same on- and offline
                "HF_HUB_OFFLINE": "1",
                "HF_HOME": str(self.root / "hf-home"),
                "TORCH_HOME": str(self.root / "torch-home"),
                # the project first; what the caller had (e.g. gpu-check's carried wheels) after
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                ),
                "COLUMNS": "200",
            }
        )
        return env

    def recipe(self, text: str, name: str = "recipe.yaml") -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def cached_run(self, recipe: Path) -> tuple[str, list[str]]:
        """Run the recipe in a fresh interpreter: its stderr, and which of the heavy ML modules
        it imported (a fully cached run must import none)."""
        probe = (
            "import sys\n"
            "from edgepipe.cli import app\n"
            f"app(['run', {str(recipe)!r}, '--out', {str(self.out)!r}, '--no-lock'],"
            " standalone_mode=False)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=self.env(),
            capture_output=True,
            text=True,
            cwd=self.root,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr, ast.literal_eval(result.stdout.strip().splitlines()[-1])

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``edgepipe ARGS`` in a subprocess; ``--out`` is added for run."""
        extra = ["--out", str(self.out)] if args and args[0] == "run" else []
        return subprocess.run(
            [sys.executable, "-m", "edgepipe", *args, *extra],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def vit_chain_recipe(name: str, opset: int = 18, last: str = "ir") -> str:
    """A recipe over timm's tiny ``test_vit`` (1.5 MB per artifact): load → onnx → simple → ir,
    cut after ``last``."""
    stages = {
        "model": "type: load\n    source: timm\n    name: test_vit\n    pretrained: false",
        "onnx": f"type: export\n    input: model\n    opset: {opset}",
        "simple": "type: simplify\n    input: onnx",
        "ir": "type: convert-openvino\n    input: simple",
    }
    chosen = list(stages)[: list(stages).index(last) + 1]
    body = "".join(f"  {sid}:\n    {stages[sid]}\n" for sid in chosen)
    return f"version: 1\nname: {name}\nstages:\n{body}"


def outcomes(stderr: str) -> dict[str, str]:
    """stage id → built/cached/failed/skipped, from a run's progress lines."""
    found = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("built", "cached", "failed", "skipped"):
            found[parts[1]] = parts[0]
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """A test_efficientnet trained on scikit-learn's digits (tests/digits.py): once for all
    xdist workers of a run (they share the base temp folder's parent, and a lock)."""
    import hashlib

    from digits import train_digits
    from filelock import FileLock

    code = hashlib.sha256((REPO / "tests" / "digits.py").read_bytes()).hexdigest()[:12]
    shared = tmp_path_factory.getbasetemp().parent / f"digits-{code}"
    with FileLock(f"{shared}.lock"):
        return train_digits(shared)


@pytest.fixture(scope="session")
def task_models():
    """The detector, segmenter and text recogniser the task recipes ship, with their labelled
    data (tests/task_models.py)."""
    from task_models import TaskModels

    return TaskModels()


@pytest.fixture(scope="session", autouse=True)
def shared_toolchains(tmp_path_factory):
    """One folder of toolchain environments for the whole run, all xdist workers included: the
    onnx2tf toolchain is built once (about a minute), under its own lock."""
    if "EDGEPIPE_TOOLCHAINS" not in os.environ:
        os.environ["EDGEPIPE_TOOLCHAINS"] = str(
            tmp_path_factory.getbasetemp().parent / "toolchains"
        )


def _group(item, name: str) -> None:
    item.add_marker(pytest.mark.xdist_group(name))
    # pytest 9.2 keeps the node id in `_id`, and xdist 3.8 still appends its group suffix to the
    # old `_nodeid`: the group was lost and each worker ran the shared fixture. Add it as this
    # pytest reads it (the worker sends these ids to the scheduler).
    if os.environ.get("PYTEST_XDIST_WORKER") and "@" not in item.nodeid and hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{name}")


# Files whose tests share a module-scoped fixture (one recipe run, many assertions): with
# `--dist loadgroup` their tests stay on one xdist worker, so the fixture runs once.
_SHARED_FIXTURE_FILES = {
    "test_bad_recipes.py",
    "test_compose.py",
    "test_ray.py",
    "test_real_weights.py",
    "test_remote_cache.py",
    "test_tasks.py",
    "test_tflite.py",
    "test_torch_native.py",
    "test_torchscript.py",
}
# The longest tests start first, so that no worker is left with one of them at the end.
_LONGEST_FIRST = (
    "test_tasks.py",
    "test_families.py",
    "test_tflite.py",
    "test_ray.py",
    "test_trained_quantization.py",
    "test_real_weights.py",
    "test_torch_native.py",
)


# tryfirst: xdist's own hook turns the marks into the groups loadgroup schedules by.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in _SHARED_FIXTURE_FILES:
            _group(item, item.path.stem)
    rank = {name: index for index, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
