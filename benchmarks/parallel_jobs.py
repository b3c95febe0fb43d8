"""--jobs: a recipe with two independent branches, built from scratch with 1 and with 2 jobs.

.venv/bin/python benchmarks/parallel_jobs.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import edgepipe, table

RECIPE = """
version: 1
name: branches
stages:
  a: {type: load, name: efficientnet_lite0}
  b: {type: load, name: mobilenetv3_large_100}
  a_onnx: {type: export, input: a}
  b_onnx: {type: export, input: b}
  a_simple: {type: simplify, input: a_onnx}
  b_simple: {type: simplify, input: b_onnx}
"""


def main() -> None:
    rows = []
    outputs = {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            recipe = root / "branches.yaml"
            recipe.write_text(RECIPE)
            seconds, _ = edgepipe(
                "run",
                str(recipe),
                "--jobs",
                str(jobs),
                "--no-lock",
                "--out",
                str(root / "out"),
                cache=root / "cache",
                cwd=root,
            )
            outputs[jobs] = [
                (root / "out" / s / "model.onnx").read_bytes() for s in ("a_simple", "b_simple")
            ]
            rows.append([str(jobs), f"{seconds:.1f}"])
    same = "identical" if outputs[1] == outputs[2] else "DIFFERENT"
    print(table(["--jobs", "cold wall s"], rows))
    print(f"\nspeed-up {float(rows[0][1]) / float(rows[1][1]):.2f}x; artifacts {same}")


if __name__ == "__main__":
    main()
