"""Teams: a second runner with an empty local cache reuses what the first pushed."""

from __future__ import annotations

import os
import time

import pytest
from conftest import outcomes

pytestmark = pytest.mark.slow

RECIPE = """
version: 1
name: shared
stages:
  model: {type: load, name: test_convnext}
  onnx: {type: export, input: model, exporter: torchscript}
  simple: {type: simplify, input: onnx}
"""


def test_second_runner_rebuilds_nothing(workspace, tmp_path):
    recipe = workspace.recipe(RECIPE)
    remote = f"file://{tmp_path / 'shared-cache'}"

    started = time.perf_counter()
    first = workspace.cli("run", str(recipe), "--remote", remote)
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    assert set(outcomes(first.stderr).values()) == {"built"}

    workspace.cache = tmp_path / "runner-b-cache"  # runner B: empty local cache, same remote
    workspace.out = tmp_path / "runner-b-out"
    started = time.perf_counter()
    second = workspace.cli("run", str(recipe), "--remote", remote)
    second_seconds = time.perf_counter() - started
    assert second.returncode == 0, second.stderr
    assert outcomes(second.stderr) == {"model": "cached", "onnx": "cached", "simple": "cached"}
    assert (workspace.out / "simple" / "model.onnx").is_file()
    print(f"runner A (builds): {first_seconds:.1f} s; runner B (pulls): {second_seconds:.1f} s")
    assert workspace.cli("cache", "verify").returncode == 0
    remote_verify = workspace.cli("cache", "verify", "--remote", remote)
    assert remote_verify.returncode == 0 and "remote cache" in remote_verify.stdout


def test_unreachable_remote_falls_back_to_local(workspace):
    recipe = workspace.recipe(RECIPE)
    env_options = {
        "EDGEPIPE_REMOTE_OPTIONS": '{"endpoint_url": "http://127.0.0.1:9", '
        '"key": "x", "secret": "y", "config_kwargs": {"retries": {"max_attempts": 1}}}'
    }
    os.environ.update(env_options)
    try:
        result = workspace.cli(
            "run", str(recipe), "--until", "model", "--remote", "s3://no-such-bucket/cache"
        )
    finally:
        for name in env_options:
            os.environ.pop(name)
    assert result.returncode == 0, result.stderr
