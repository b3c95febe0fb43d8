"""Artifact speed: resnet50 and efficientnet_lite0, torch eager vs every CPU artifact.

    .venv/bin/python benchmarks/artifact_speed.py [--models resnet50 efficientnet_lite0]

Builds (random weights, offline) ONNX fp32, ORT static INT8, OpenVINO FP32 and NNCF INT8, with
parity for each, and prints the benchmark stage's Markdown table per model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import edgepipe

RECIPE = """
version: 1
name: artifact-speed
matrix:
  model: [{models}]
stages:
  load: {{type: load, name: "${{model}}"}}
  onnx: {{type: export, input: load}}
  simple: {{type: simplify, input: onnx}}
  ort_int8: {{type: quantize, input: simple, calibration: {{count: 32}}}}
  ov_fp32: {{type: convert-openvino, input: simple}}
  ov_int8: {{type: quantize, input: ov_fp32, backend: openvino, calibration: {{count: 32}}}}
  parity_ort_int8: {{type: parity, input: ort_int8}}
  parity_ov_int8: {{type: parity, input: ov_int8}}
  bench:
    type: benchmark
    inputs: [simple, ort_int8, ov_fp32, ov_int8, parity_ort_int8, parity_ov_int8]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        recipe = root / "speed.yaml"
        recipe.write_text(RECIPE.format(models=", ".join(args.models)))
        edgepipe("run", str(recipe), "--no-lock", cache=root / "cache", cwd=root)
        _, report = edgepipe("report", str(recipe), cache=root / "cache", cwd=root)
    print(report)


if __name__ == "__main__":
    main()
