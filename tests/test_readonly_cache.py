"""A shared cache mounted read-only serves fully cached runs; a build fails with one line."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import outcomes, vit_chain_recipe

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only the way CI does: a read-only bind mount (as root, where
    permission bits do not stop writes), else by permission bits."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for path in modes:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {bind.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_fully_cached_run_is_served_from_a_read_only_cache(workspace):
    recipe = workspace.recipe(vit_chain_recipe("shared", opset=17, last="onnx"))
    assert workspace.cli("run", str(recipe)).returncode == 0
    with read_only(workspace.cache):
        for attempt in range(2):
            workspace.out.rename(workspace.root / f"old-out-{attempt}")
            cached = workspace.cli("run", str(recipe))
            assert cached.returncode == 0, cached.stderr
            assert outcomes(cached.stderr) == {"model": "cached", "onnx": "cached"}
            assert (workspace.out / "onnx" / "model.onnx").is_file()
            assert "Traceback" not in cached.stderr and "warning" not in cached.stderr.lower()

        recipe.write_text(vit_chain_recipe("shared", opset=18, last="onnx"))
        build = workspace.cli("run", str(recipe))
        assert build.returncode == 5, build.stderr
        assert "Traceback" not in build.stderr
        lines = [line for line in build.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, build.stderr
        assert "is read-only" in lines[0] and "onnx" in lines[0]
        assert "will run" in workspace.cli("plan", str(recipe)).stdout
