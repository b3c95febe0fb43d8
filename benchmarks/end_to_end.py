"""End-to-end speed from raw frames: torch eager + timm's host preprocessing vs INT8 artifacts,
with host preprocessing and with the preprocessing baked into the graph (composed INT8).

    .venv/bin/python benchmarks/end_to_end.py [--models resnet50 efficientnet_lite0] [--threads N]

Raw frames are 640x480 RGB photos (the benchmark stage's camera frame). Rows without baked-in
preprocessing add timm's PIL transform (timed on the same frames) to their model time; composed
rows take the raw frame. Prints the benchmark stage's table per model, and the CPU it ran on.
Weights: random (speed does not depend on them); parity is checked on every artifact.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import edgepipe

RECIPE = """
version: 1
name: end-to-end
matrix:
  model: [{models}]
stages:
  load: {{type: load, name: "${{model}}"}}
  onnx: {{type: export, input: load}}
  simple: {{type: simplify, input: onnx}}
  e2e: {{type: compose-preprocessing, input: simple}}
  ort_int8: {{type: quantize, input: simple, calibration: {{count: 32}}}}
  e2e_int8: {{type: quantize, input: e2e, calibration: {{count: 32}}}}
  ov_fp32: {{type: convert-openvino, input: simple}}
  ov_int8: {{type: quantize, input: ov_fp32, backend: openvino, calibration: {{count: 32}}}}
  e2e_ov: {{type: convert-openvino, input: e2e}}
  e2e_ov_int8: {{type: quantize, input: e2e_ov, backend: openvino, calibration: {{count: 32}}}}
  parity_ort_int8: {{type: parity, input: ort_int8}}
  parity_e2e_int8: {{type: parity, input: e2e_int8}}
  parity_ov_int8: {{type: parity, input: ov_int8}}
  parity_e2e_ov_int8: {{type: parity, input: e2e_ov_int8}}
  bench:
    type: benchmark
    inputs: [ort_int8, e2e_int8, ov_int8, e2e_ov_int8,
             parity_ort_int8, parity_e2e_int8, parity_ov_int8, parity_e2e_ov_int8]
    {threads}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--threads", type=int, default=None, help="Default: all cores.")
    args = parser.parse_args()
    threads = f"threads: {args.threads}" if args.threads else ""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        recipe = root / "end_to_end.yaml"
        recipe.write_text(RECIPE.format(models=", ".join(args.models), threads=threads))
        edgepipe("run", str(recipe), "--no-lock", cache=root / "cache", cwd=root)
        _, report = edgepipe("report", str(recipe), cache=root / "cache", cwd=root)
    print(report)


if __name__ == "__main__":
    main()
