"""`make gpu-check` stays in step with the code: on this CPU machine it prints its plan and
exits 0, and the plan names exactly the tests pytest collects as ``gpu``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def test_make_gpu_check_prints_the_plan_and_exits_0_without_a_gpu():
    dry = subprocess.run(["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0 and "benchmarks/gpu_check.py" in dry.stdout, dry.stderr
    if gpu_check.has_gpu():
        return  # the plan-only path is for machines without one
    done = subprocess.run(
        ["make", "gpu-check", f"GPU_PYTHON={sys.executable}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    for check in ("discovery", "gpu tests", "torch cuda eager", "cupy preprocessing", "end to end"):
        assert check in plan
    for test in gpu_check.gpu_marked_tests():
        assert test in plan


def test_the_plan_lists_every_gpu_marked_test():
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
        + ["--collect-only", "-q", "-m", "gpu", "tests/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ids = {line.split("[")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert ids and ids == set(gpu_check.gpu_marked_tests()), collected.stdout


def test_summary_markdown_says_what_was_not_verified_and_why():
    summary = {
        "discovery": {"gpus": ["NVIDIA H200, 580.159.04, 143771 MiB"], "tensorrt": "unavailable"},
        "gpu tests": {"verified": None, "tests": {"test_io": "skipped: no onnxruntime-gpu"}},
        "torch cuda eager": {"verified": True, "p50_ms_batch1": 1.2},
        "end to end": {"verified": None, "why": "no onnxruntime-gpu: TensorRT EP not verified"},
    }
    text = gpu_check._markdown(summary)
    assert "| gpu tests | not verified | test_io: skipped: no onnxruntime-gpu |" in text
    assert "| torch cuda eager | verified | p50_ms_batch1 1.2 |" in text
    assert "no onnxruntime-gpu: TensorRT EP not verified" in text
