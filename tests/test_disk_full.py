"""A full disk is named as such, with its path, whatever the library that hit it says.

The cache lives on a small tmpfs (mounting one needs root; elsewhere the test skips), sized so
that the stage under test is the one that runs out of space.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import outcomes, vit_chain_recipe

pytestmark = pytest.mark.slow

RECIPE = vit_chain_recipe("full")


@pytest.fixture
def small_cache(workspace):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the cache needs root")
    workspace.cache.mkdir()
    mounted = []

    def mount(size: str):
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(workspace.cache)],
            capture_output=True,
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
        mounted.append(workspace.cache)

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


# Each output is 1.5–1.7 MB: 2600 KiB holds the model but not the ONNX export; 5600 KiB holds
# model, export and simplified model, but not the OpenVINO IR.
@pytest.mark.parametrize(
    ("size", "full_stage", "library_says"),
    [("2600k", "onnx", "export"), ("5600k", "ir", "basic_ios::clear")],
)
def test_disk_full_names_the_cause_and_the_path(
    workspace, small_cache, size, full_stage, library_says
):
    small_cache(size)
    recipe = workspace.recipe(RECIPE)
    run = workspace.cli("run", str(recipe))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert outcomes(run.stderr)[full_stage] == "failed"
    error = next(line for line in run.stderr.splitlines() if line.startswith("error:"))
    assert f"stage '{full_stage}' failed: no space left on device" in error
    assert str(workspace.cache) in error
    assert library_says in run.stderr  # what the library said is kept, after the cause
    assert not os.listdir(workspace.cache / "tmp")  # the failed stage's partial output is gone
