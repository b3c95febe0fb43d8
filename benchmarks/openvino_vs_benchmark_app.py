"""Does the benchmark stage agree with OpenVINO's own benchmark_app on the same IR?

    .venv/bin/python benchmarks/openvino_vs_benchmark_app.py [--model resnet50] [--seconds 20]

Same IRs (FP32 and its NNCF INT8), device CPU, latency hint, batch 1, same thread count; prints
both medians per IR and whether they agree within ±15 %.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import edgepipe, table

RECIPE = """
version: 1
name: ov-check
stages:
  model: {{type: load, name: {model}}}
  onnx: {{type: export, input: model}}
  ov: {{type: convert-openvino, input: onnx, input_shape: [1, 3, {size}, {size}]}}
  int8: {{type: quantize, input: ov, backend: openvino, calibration: {{count: 32}}}}
  bench: {{type: benchmark, inputs: [ov, int8], threads: {threads}, max_seconds: {seconds},
          openvino: {{device: CPU, hint: latency}}}}
"""


def benchmark_app_median(xml: Path, seconds: int) -> float:
    tool = shutil.which("benchmark_app", path=str(Path(sys.executable).parent))
    if tool is None:
        sys.exit("benchmark_app not found (it ships with the openvino package)")
    result = subprocess.run(
        [tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-t", str(seconds), "-b", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Median:\s+([\d.]+)\s*ms", result.stdout)
    if not match:
        sys.exit(f"could not read benchmark_app's median:\n{result.stdout[-2000:]}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    # benchmark_app refuses -nthreads together with a hint and, under the latency hint, uses
    # every core: edgepipe gets every core too (a thread option here could only mislead)
    threads = os.cpu_count()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        recipe = root / "ov.yaml"
        recipe.write_text(
            RECIPE.format(model=args.model, size=args.size, threads=threads, seconds=args.seconds)
        )
        edgepipe(
            "run",
            str(recipe),
            "--no-lock",
            "--out",
            str(root / "out"),
            cache=root / "cache",
            cwd=root,
        )
        report = json.loads((root / "out" / "bench" / "benchmark.json").read_text())
        rows = []
        for label in ("ov", "int8"):
            ours = next(r for r in report["rows"] if r["label"] == label)["p50_ms"]
            xml = root / "out" / label / "model.xml"
            theirs = benchmark_app_median(xml, args.seconds)
            ratio = ours / theirs
            verdict = "agree" if abs(ratio - 1) <= 0.15 else "DISAGREE"
            rows.append([label, f"{ours:.2f}", f"{theirs:.2f}", f"{ratio:.3f}", verdict])
    print(f"{args.model}, CPU, latency hint, batch 1, {threads} threads\n")
    print(table(["IR", "edgepipe p50 ms", "benchmark_app median ms", "ratio", "±15 %"], rows))


if __name__ == "__main__":
    main()
