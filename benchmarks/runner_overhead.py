"""Runner overhead: a fully cached `edgepipe run` (goal ≤ 0.25 s), and a cold run of the
quickstart vs the same library calls written by hand (goal ≤ 3 % overhead).

    .venv/bin/python benchmarks/runner_overhead.py [--runs 10] [--cold-runs 3]

The fully cached run is timed twice: as users get it (the no-op fast path of
edgepipe/noop_run.py answers from the record the previous run left, before typer, rich and
pydantic are imported) and with ``EDGEPIPE_NO_FAST_PATH=1`` (the full path: load the recipe,
build the graph, compute every key, look up and materialise).

Interpreter start-up is included on both sides; the hand-written script does what the
quickstart's stages do: create the timm model, export with the dynamo exporter, onnxsim.
A cold run takes ~8 s and varies by a few percent from one run to the next on a shared
machine, so cold runs and hand-written runs alternate and their medians are compared.

A plain script also pays Python's teardown of torch on exit (~1 s); edgepipe's stages run in
forked children that skip it. So the hand-written script is timed twice: as written, and
ending in ``os._exit(0)`` (its library calls alone, the strict floor).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, edgepipe, table

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


_NO_TEARDOWN = "\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n"


def _seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "pipelines" / "quickstart.yaml")
    parser.add_argument("--runs", type=int, default=10, help="fully cached runs")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold and hand-written runs")
    args = parser.parse_args()
    recipe = str(args.recipe)
    cold, hand, calls_only = [], [], []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        # --no-lock: timing runs must not rewrite the committed pipelines/quickstart.lock
        run = ("run", recipe, "--out", str(scratch / "out"), "--no-lock")
        for attempt in range(args.cold_runs):
            cache = scratch / f"cache-{attempt}"  # empty: everything builds
            cold.append(edgepipe(*run, cache=cache, cwd=REPO)[0])
            hand.append(_seconds([sys.executable, "-c", HAND_WRITTEN], scratch))
            calls_only.append(
                _seconds([sys.executable, "-c", HAND_WRITTEN + _NO_TEARDOWN], scratch)
            )
        edgepipe(*run, cache=cache, cwd=REPO)  # a fully cached run leaves the record
        warm = [edgepipe(*run, cache=cache, cwd=REPO)[0] for _ in range(args.runs)]
        no_fast = {"EDGEPIPE_NO_FAST_PATH": "1"}
        full = [edgepipe(*run, cache=cache, cwd=REPO, env=no_fast)[0] for _ in range(args.runs)]
        bare = [_seconds([sys.executable, "-c", "pass"], scratch) for _ in range(args.runs)]
    rows = [
        ("cold run (builds everything)", cold),
        ("same calls written by hand", hand),
        ("… ending in os._exit (no teardown)", calls_only),
        ("fully cached run (no-op fast path)", warm),
        ("fully cached run, EDGEPIPE_NO_FAST_PATH=1", full),
        ("bare `python -c pass` (floor)", bare),
    ]
    print(f"recipe: {args.recipe.name}; {args.cold_runs} cold runs, {args.runs} cached runs\n")
    print(
        table(
            ["measurement", "runs", "min s", "median s"],
            [
                [name, str(len(times)), f"{min(times):.3f}", f"{statistics.median(times):.3f}"]
                for name, times in rows
            ],
        )
    )
    cold_median = statistics.median(cold)
    for name, times in (("hand-written", hand), ("its library calls alone", calls_only)):
        overhead = cold_median / statistics.median(times) - 1
        print(f"\ncold-run overhead vs {name} (medians): {overhead:+.1%}  (goal ≤ +3 %)", end="")
    print()
    print(
        f"fully cached run (median): {statistics.median(warm):.3f} s with the fast path, "
        f"{statistics.median(full):.3f} s without  (goal ≤ 0.25 s)"
    )


if __name__ == "__main__":
    main()
