"""`make gpu-check`: what edgepipe's GPU paths do on this machine, verified in one call.

On a machine with an NVIDIA GPU it runs, within about 8 minutes:

1. discovery: GPU model, driver, CUDA (driver and torch), CuPy, ONNX Runtime's build and
   providers, TensorRT;
2. every test marked ``gpu`` (tests/test_gpu.py): each passes, fails, or skips with its reason;
3. torch CUDA eager against the CPU on a small timm model: the same logits, and p50 latency;
4. CuPy preprocessing (edgepipe.imaging.gpu_preprocessing) against timm's PIL transform on the
   bundled photos: the same tensor within one grey level, and ms per image each;
5. an end-to-end recipe (load → ONNX → benchmark) whose benchmark adds CUDA and TensorRT
   execution provider rows where ONNX Runtime has those providers;

and writes ``gpu-check.md`` and ``gpu-check.json`` (into ``$OUT`` if set, else
``build/gpu-check``): each check verified, failed, or not verified with why ("no
onnxruntime-gpu: TensorRT EP not verified").

On a machine without a GPU it prints exactly that plan (the commands, the GPU tests by id) and
exits 0, so CI keeps it in step with the code. Standard library only at the top: the device
machine may lack edgepipe's dependencies until its carried wheels are installed.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPU_TESTS = ("tests/test_gpu.py",)
BUDGET_SECONDS = 8 * 60
E2E_RECIPE = """version: 1
name: gpu-check
stages:
  model: {{type: load, name: test_efficientnet}}
  onnx: {{type: export, input: model, exporter: torchscript}}
  bench:
    type: benchmark
    inputs: [model, onnx]
    batch_sizes: [1, 8]
    max_seconds: 5
    onnxruntime_providers: {providers}
"""


def gpu_marked_tests() -> list[str]:
    """Node ids (file::function) of the tests marked ``gpu``, read from the source (no import)."""
    found = []
    for name in GPU_TESTS:
        tree = ast.parse((REPO / name).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d).startswith("pytest.mark.gpu") for d in node.decorator_list
            ):
                found.append(f"{name}::{node.name}")
    return found


def plan() -> list[tuple[str, str]]:
    """(check, what runs) in order."""
    python = "python3 -m"
    return [
        ("discovery", "nvidia-smi; torch.cuda; cupy; onnxruntime providers; tensorrt"),
        (
            "gpu tests",
            f"{python} pytest -o addopts= -p no:cacheprovider -q -rs -m gpu "
            + " ".join(GPU_TESTS)
            + f" ({len(gpu_marked_tests())} tests: {', '.join(gpu_marked_tests())})",
        ),
        ("torch cuda eager", "timm test_efficientnet: CUDA vs CPU logits, p50 at batch 1 and 8"),
        ("cupy preprocessing", "TimmPreprocessor on the GPU vs timm's PIL transform, 10 photos"),
        (
            "end to end",
            f"{python} edgepipe run gpu-check.yaml (load → ONNX → benchmark with the CUDA and "
            "TensorRT execution providers ONNX Runtime has)",
        ),
    ]


def has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return probe.returncode == 0 and "GPU" in probe.stdout


def discover() -> dict:
    facts: dict = {}
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    )
    facts["gpus"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
    facts["torch"] = _guarded(
        lambda: (
            __import__("torch").__version__
            + f" (CUDA {__import__('torch').version.cuda}, "
            + f"available {__import__('torch').cuda.is_available()})"
        )
    )
    facts["cupy"] = _guarded(
        lambda: (
            f"{__import__('cupy').__version__} (CUDA runtime "
            f"{__import__('cupy').cuda.runtime.runtimeGetVersion()})"
        )
    )
    facts["onnxruntime"] = _guarded(
        lambda: (
            f"{__import__('onnxruntime').__version__}: "
            + ", ".join(__import__("onnxruntime").get_available_providers())
        )
    )
    facts["tensorrt"] = _guarded(lambda: __import__("tensorrt").__version__)
    facts["edgepipe gpu problems"] = _guarded(
        lambda: __import__("edgepipe.gpu", fromlist=["gpu_problems"]).gpu_problems(True)
    )
    return facts


def _guarded(read):
    try:
        return read()
    except Exception as exc:  # a missing or broken package is a fact here, not a failure
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"


def run_gpu_tests(out: Path) -> dict:
    junit = out / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]
    command += ["-q", "-rs", "-m", "gpu", f"--junitxml={junit}", *GPU_TESTS]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    outcomes = _junit_outcomes(junit)
    ran = any(outcome == "passed" for outcome in outcomes.values())
    verified = (result.returncode == 0 or None) if ran else None  # all skipped: not verified
    if result.returncode not in (0, 5):
        verified = False
    return {"verified": verified, "exit_code": result.returncode, "tests": outcomes}


def _junit_outcomes(path: Path) -> dict[str, str]:
    import xml.etree.ElementTree as ElementTree

    if not path.is_file():
        return {}
    outcomes = {}
    for case in ElementTree.parse(path).iter("testcase"):
        name = case.get("name", "")
        child = next(iter(case), None)
        if child is None:
            outcomes[name] = "passed"
        else:
            outcomes[name] = f"{child.tag}: {(child.get('message') or '')[:300]}"
    return outcomes


def torch_cuda_eager() -> dict:
    import numpy as np
    import timm
    import torch

    model = timm.create_model("test_efficientnet", pretrained=False).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 3, 160, 160), np.float32))
    with torch.inference_mode():
        cpu = model(x)
        gpu_model = model.cuda()
        gpu = gpu_model(x.cuda()).cpu()
        latency = {}
        for batch in (1, 8):
            batch_x = x[:batch].cuda()
            for _ in range(10):
                gpu_model(batch_x)
            torch.cuda.synchronize()
            times = []
            for _ in range(50):
                started = time.perf_counter()
                gpu_model(batch_x)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - started) * 1000)
            latency[f"p50_ms_batch{batch}"] = round(float(np.median(times)), 3)
    error = float((cpu - gpu).abs().max())
    return {"verified": error < 1e-2, "max_abs_error_vs_cpu": error, **latency}


def cupy_preprocessing() -> dict:
    import cupy
    import numpy as np

    from edgepipe.imaging.gpu_preprocessing import TimmPreprocessor
    from edgepipe.imaging.samples import load_images
    from edgepipe.imaging.timm_eval import timm_eval_transform

    config = {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    on_gpu, reference = TimmPreprocessor(config, device_id=0), timm_eval_transform(config)
    worst, gpu_ms, pil_ms = 0.0, [], []
    for _, image in load_images(None, 10):
        started = time.perf_counter()
        expected = reference(image).unsqueeze(0).numpy()
        pil_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        got = on_gpu(np.asarray(image))
        cupy.cuda.Device(0).synchronize()
        gpu_ms.append((time.perf_counter() - started) * 1000)
        worst = max(worst, float(np.abs(cupy.asnumpy(got) - expected).max()))
    # one grey level after normalisation: 1/255 over the smallest std
    return {
        "verified": worst <= 1 / 255 / min(config["std"]) + 1e-6,
        "max_abs_error_vs_pil": worst,
        "gpu_ms_per_image": round(float(np.median(gpu_ms)), 3),
        "pil_ms_per_image": round(float(np.median(pil_ms)), 3),
    }


def end_to_end(out: Path) -> dict:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    if not wanted:
        return {
            "verified": None,
            "why": "no onnxruntime-gpu (providers: " + ", ".join(available) + "): CUDA and "
            "TensorRT execution providers not verified",
        }
    folder = out / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "gpu-check.yaml"
    recipe.write_text(E2E_RECIPE.format(providers=json.dumps([*wanted, "CPUExecutionProvider"])))
    env = {**os.environ, "EDGEPIPE_CACHE": str(folder / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(folder / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    table = folder / "out" / "bench" / "benchmark.md"
    return {
        "verified": result.returncode == 0,
        "providers": wanted,
        "table": table.read_text() if table.is_file() else result.stderr[-2000:],
    }


def main() -> int:
    steps = plan()
    gpu = has_gpu()
    if "--plan" in sys.argv or not gpu:
        print("gpu-check plan:" if gpu else "gpu-check: no NVIDIA GPU here; on one it runs:")
        for number, (check, what) in enumerate(steps, start=1):
            print(f"  {number}. {check}: {what}")
        return 0
    out = Path(os.environ.get("OUT") or REPO / "build" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict = {"discovery": discover()}
    checks = {
        "gpu tests": lambda: run_gpu_tests(out),
        "torch cuda eager": torch_cuda_eager,
        "cupy preprocessing": cupy_preprocessing,
        "end to end": lambda: end_to_end(out),
    }
    for name, check in checks.items():
        if time.monotonic() - started > BUDGET_SECONDS:
            summary[name] = {"verified": None, "why": "the 8-minute budget was spent"}
            continue
        summary[name] = _guarded_check(check)
        print(f"{name}: {json.dumps(summary[name])[:400]}", flush=True)
    (out / "gpu-check.json").write_text(json.dumps(summary, indent=2))
    (out / "gpu-check.md").write_text(_markdown(summary))
    print(_markdown(summary))
    failed = [n for n in checks if summary[n].get("verified") is False]
    return 1 if failed else 0


def _guarded_check(check) -> dict:
    try:
        return check()
    except ImportError as exc:
        return {"verified": None, "why": f"not verified: {exc}"}
    except Exception as exc:
        return {"verified": False, "why": f"{type(exc).__name__}: {str(exc)[:500]}"}


def _markdown(summary: dict) -> str:
    lines = ["# gpu-check", "", "| discovery | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary["discovery"].items()]
    lines += ["", "| check | result | details |", "|---|---|---|"]
    for name, result in summary.items():
        if name == "discovery":
            continue
        verdict = {True: "verified", False: "FAILED", None: "not verified"}[result.get("verified")]
        if name == "gpu tests":
            details = "; ".join(f"{t}: {o}" for t, o in result.get("tests", {}).items())
        else:
            shown = {k: v for k, v in result.items() if k not in ("verified", "table")}
            details = ", ".join(f"{k} {v}" for k, v in shown.items())
        lines.append(f"| {name} | {verdict} | {details} |")
    table = summary.get("end to end", {}).get("table")
    return "\n".join(lines + (["", table] if table else [])) + "\n"


if __name__ == "__main__":
    sys.exit(main())
