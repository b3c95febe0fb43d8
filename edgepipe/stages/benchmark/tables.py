"""Benchmark tables: the Markdown table (PR comment / CI summary), the plot, the baseline gate."""

from __future__ import annotations

__all__ = ["baseline_report", "compare_to_baseline", "markdown_table", "write_plot"]

from pathlib import Path
from typing import Any


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"


_RUNTIME_NAMES = {
    "f32": "fp32",
    "f16": "fp16",
    "bf16": "bf16",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
}


def _precision(row: dict[str, Any]) -> str:
    """Declared precision, plus what the runtime executed when it differs (OpenVINO bf16)."""
    declared = row["precision"]
    ran = _RUNTIME_NAMES.get(str(row.get("exec_precision")), declared)
    return declared if ran == declared else f"{declared} ({ran} exec)"


def markdown_table(report: dict[str, Any]) -> str:
    """One row per artifact and batch size; speedup is end-to-end vs torch eager."""
    env = report["environment"]
    lines = [
        f"**{report['recipe']}** on {env['cpu']} ({report['method']['threads']} threads)"
        + (f", GPU {env['gpu']['name']}" if env.get("gpu") else ""),
        "",
        "| artifact | runtime | precision | size | batch | p50 ms | p90 ms | e2e p50 ms "
        "| throughput/s | speedup | parity |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        speedup = f"{row['speedup']:.1f}×" if row.get("speedup") else "—"
        stable = "" if row["stable"] else " ⚠"
        lines.append(
            f"| {row['label']} | {row['runtime']} | {_precision(row)} | {_size(row['size_bytes'])} "
            f"| {row['batch_size']} | {row['p50_ms']:.2f}{stable} | {row['p90_ms']:.2f} "
            f"| {row['e2e_p50_ms']:.2f} | {row['throughput_per_s']:.1f} | {speedup} "
            f"| {row.get('parity') or '—'} |"
        )
    compiled = [row for row in report["rows"] if row.get("compile_s") is not None]
    if compiled:
        times = ", ".join(
            f"{r['label']} batch {r['batch_size']} {r['compile_s']:.1f} s" for r in compiled
        )
        lines += ["", f"torch.compile time (first call of each shape, not in p50): {times}."]
    lines += [f"\n{note}" for note in report.get("notes", [])]
    gpu_ms = report.get("gpu_preprocess_ms")
    on_gpu = f"; on the GPU rows in CuPy, {gpu_ms:.2f} ms" if gpu_ms is not None else ""
    lines += [
        "",
        "e2e = model + host preprocessing (timm/PIL, "
        f"{report['preprocess_ms']:.2f} ms per image{on_gpu}) unless preprocessing is in the "
        "graph. ⚠ = timing did not stabilise within the time cap.",
    ]
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: Path) -> None:
    """Latency and throughput bars, one per artifact (smallest batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = min(row["batch_size"] for row in report["rows"])
    rows = [row for row in report["rows"] if row["batch_size"] == batch]
    labels = [row["label"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2))
    left.barh(labels, [row["e2e_p50_ms"] for row in rows], color="#4c72b0")
    left.set_xlabel(f"end-to-end p50 latency, ms (batch {batch})")
    left.invert_yaxis()
    right.barh(labels, [row["throughput_per_s"] for row in rows], color="#55a868")
    right.set_xlabel("throughput, images/s")
    right.invert_yaxis()
    right.set_yticklabels([])
    figure.suptitle(f"{report['recipe']} — {report['environment']['cpu']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def compare_to_baseline(
    report: dict[str, Any], baseline: dict[str, Any], margin: float
) -> tuple[list[str], str | None]:
    """Regressions beyond ``margin`` (fraction) vs a committed report on the same hardware.

    Returns (regressions, note); the note says why nothing was compared, if so.
    """
    here, there = _hardware(report), _hardware(baseline)
    if here != there:
        return [], f"baseline was measured on other hardware ({there} vs {here}); not compared"
    before = {(r["label"], r["batch_size"]): r for r in baseline["rows"]}
    regressions = []
    for row in report["rows"]:
        old = before.get((row["label"], row["batch_size"]))
        if old and row["p50_ms"] > old["p50_ms"] * (1 + margin):
            change = row["p50_ms"] / old["p50_ms"] - 1
            regressions.append(
                f"{row['label']} (batch {row['batch_size']}): p50 "
                f"{old['p50_ms']:.2f} → {row['p50_ms']:.2f} ms (+{change:.0%}, "
                f"allowed +{margin:.0%})"
            )
    return regressions, None


def baseline_report(baseline: dict[str, Any], stage_id: str) -> dict[str, Any] | None:
    """The baseline as a benchmark report: a committed ``benchmark.json`` as it is, or this
    stage's rows of a recipe's metrics file (``<recipe>.metrics.json``); None if it has none."""
    if "metrics_version" not in baseline:
        return baseline
    measured = (baseline.get("stages") or {}).get(stage_id)
    if not measured:
        return None
    rows = [
        {"label": name.rpartition("@")[0], "batch_size": int(name.rpartition("@")[2]), **row}
        for name, row in measured.items()
        if isinstance(row, dict) and "@" in name
    ]
    machine = baseline.get("machine") or {}
    return {
        "rows": rows,
        "environment": machine,
        "method": {"threads": measured.get("threads")},
    }


def _hardware(report: dict[str, Any]) -> tuple:
    env = report["environment"]
    return env["cpu"], env["cpu_count"], report["method"]["threads"], env.get("gpu")
