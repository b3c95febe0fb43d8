"""benchmark: the measurement method, the report files, the baseline gate, `edgepipe report`."""

from __future__ import annotations

import json
import time

import pytest

from edgepipe.stages.benchmark.timing import measure

FAST = "warmup_seconds: 0.1, window_seconds: 0.05, max_seconds: 2"


def test_measure_stops_when_windows_agree():
    result = measure(
        lambda _: sum(range(2000)),
        [None],
        1,
        warmup_seconds=0.05,
        window_seconds=0.02,
        stability=0.5,
        max_seconds=5,
    )
    assert result.stable and result.windows >= 3
    summary = result.summary()
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    assert summary["iterations"] == len(result.latencies)


def test_measure_gives_up_on_a_drifting_workload():
    calls = []

    def slower_each_time(_):
        calls.append(None)
        time.sleep(0.0002 * len(calls))

    result = measure(
        slower_each_time,
        [None],
        1,
        warmup_seconds=0.0,
        window_seconds=0.01,
        stability=0.001,
        max_seconds=0.5,
    )
    assert not result.stable


@pytest.mark.slow
def test_benchmark_report_files_and_cli_report(workspace):
    recipe = workspace.recipe(f"""
        version: 1
        name: bench
        stages:
          model: {{type: load, name: test_efficientnet}}
          onnx: {{type: export, input: model, exporter: torchscript}}
          check: {{type: parity, input: onnx}}
          bench: {{type: benchmark, inputs: [onnx, check], batch_sizes: [1, 2], {FAST}}}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    out = workspace.out / "bench"
    report = json.loads((out / "benchmark.json").read_text())
    rows = {(r["label"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {("model", 1), ("model", 2), ("onnx", 1), ("onnx", 2)}
    assert rows[("model", 1)]["runtime"] == "torch eager" and rows[("model", 1)]["speedup"] == 1
    assert rows[("onnx", 1)]["parity"] == "passed"
    assert rows[("onnx", 1)]["runtime"] == "onnxruntime CPU"
    assert rows[("onnx", 2)]["e2e_p50_ms"] > rows[("onnx", 2)]["p50_ms"]  # host preprocessing
    # CPU rows: timm's PIL transform on the host; no GPU row, so no CuPy timing either
    assert rows[("onnx", 1)]["host_preprocessing"] == "pil" and report["gpu_preprocess_ms"] is None
    assert report["method"]["threads"] >= 1 and report["environment"]["cpu"]
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "benchmark.md").read_text()
    assert "| onnx | onnxruntime CPU | fp32 |" in table

    printed = workspace.cli("report", str(recipe))
    assert printed.returncode == 0
    assert "| check | parity (fp32) | passed |" in printed.stdout
    assert "| onnx | onnxruntime CPU | fp32 |" in printed.stdout

    plan = json.loads(workspace.cli("plan", str(recipe), "--json").stdout)
    assert {p["status"] for p in plan} == {"cached"}


@pytest.mark.slow
def test_openvino_throughput_hint_and_a_fixed_batch(workspace):
    recipe = workspace.recipe(f"""
        version: 1
        name: streams
        stages:
          model: {{type: load, name: test_efficientnet}}
          onnx: {{type: export, input: model, exporter: torchscript}}
          ir: {{type: convert-openvino, input: onnx, input_shape: [1, 3, 160, 160]}}
          bench: {{type: benchmark, inputs: [ir], batch_sizes: [1, 2], {FAST},
                  openvino: {{hint: throughput}}}}
    """)
    result = workspace.cli("run", str(recipe))
    assert result.returncode == 0, result.stderr
    rows = json.loads((workspace.out / "bench" / "benchmark.json").read_text())["rows"]
    # the IR is fixed to batch 1: batch 2 is skipped for it (and said), not a crash
    assert {(r["label"], r["batch_size"]) for r in rows} == {("model", 1), ("model", 2), ("ir", 1)}
    assert "ir takes batches of 1 only: batch size 2 skipped" in result.stderr
    (ir,) = [r for r in rows if r["label"] == "ir"]
    # the throughput hint keeps several requests in flight, and throughput counts them all
    assert ir["runtime"] == "openvino CPU throughput" and ir["in_flight"] >= 1
    expected = ir["batch_size"] * ir["in_flight"] * 1000 / ir["mean_ms"]
    assert ir["throughput_per_s"] == pytest.approx(expected)
