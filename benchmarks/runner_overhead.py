"""Runner overhead: a fully cached `edgepipe run` (goal ≤ 0.25 s), and a cold run of the
quickstart vs the same library calls written by hand (goal ≤ 3 % overhead).

    .venv/bin/python benchmarks/runner_overhead.py [--runs 10]

Interpreter start-up is included on both sides; the hand-written script does what the
quickstart's stages do: create the timm model, export with the dynamo exporter, onnxsim.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(recipe: Path, env: dict[str, str], out: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "edgepipe", "run", str(recipe), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"edgepipe run failed:\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "pipelines" / "quickstart.yaml")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "EDGEPIPE_CACHE": str(Path(scratch) / "cache")}
        out = Path(scratch) / "out"
        cold = _run(args.recipe, env, out)
        warm = [_run(args.recipe, env, out) for _ in range(args.runs)]
        bare = [_time_python(env) for _ in range(args.runs)]
        hand = _time_hand_written(Path(scratch))
    rows = [
        ("cold run (builds everything)", cold, cold),
        ("same calls written by hand", hand, hand),
        ("fully cached run", min(warm), statistics.median(warm)),
        ("bare `python -c pass` (floor)", min(bare), statistics.median(bare)),
    ]
    print(f"recipe: {args.recipe.name}, {args.runs} runs\n")
    print(f"| {'measurement':<32} | {'min s':>7} | {'median s':>8} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 10}|")
    for name, best, median in rows:
        print(f"| {name:<32} | {best:>7.3f} | {median:>8.3f} |")
    print(f"\ncold-run overhead vs hand-written: {cold / hand - 1:+.1%}")


HAND_WRITTEN = """
import onnx, onnxsim, timm, torch
torch.manual_seed(0)
model = timm.create_model("mobilenetv3_small_100", pretrained=False).eval()
x = torch.randn(2, 3, 224, 224)
torch.onnx.export(model, (x,), "hand.onnx", dynamo=True, opset_version=18,
                  input_names=["input"], output_names=["output"],
                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
simple, ok = onnxsim.simplify("hand.onnx", check_n=3, test_input_shapes={"input": [1, 3, 224, 224]})
onnx.save(simple, "hand-simple.onnx")
"""


def _time_hand_written(scratch: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", HAND_WRITTEN], cwd=scratch, check=True, capture_output=True
    )
    return time.perf_counter() - started


def _time_python(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
