"""The measurement method: warm up, then time windows until three in a row agree.

Modelled on Model Navigator / OpenVINO benchmark_app: a fixed iteration count either wastes
time on a stable machine or stops early on a noisy one; stability windows adapt to both.
"""

from __future__ import annotations

__all__ = ["Measurement", "measure"]

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Measurement:
    """Latencies (seconds) of the stable windows, and whether stability was reached."""

    latencies: list[float]
    stable: bool
    windows: int
    batch_size: int
    in_flight: int = 1  # requests each timed call runs concurrently (OpenVINO throughput hint)

    def summary(self) -> dict[str, Any]:
        import numpy as np

        ms = np.asarray(self.latencies) * 1000.0
        mean = float(ms.mean())
        return {
            "batch_size": self.batch_size,
            "in_flight": self.in_flight,
            "iterations": int(ms.size),
            "windows": self.windows,
            "stable": self.stable,
            "mean_ms": mean,
            "std_ms": float(ms.std()),
            "min_ms": float(ms.min()),
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "throughput_per_s": self.batch_size * self.in_flight * 1000.0 / mean,
        }


def measure(
    run: Callable[[Any], Any],
    batches: Sequence[Any],
    batch_size: int,
    *,
    warmup_seconds: float,
    window_seconds: float,
    stability: float,
    max_seconds: float,
    in_flight: int = 1,
) -> Measurement:
    """Time ``run(batch)`` cycling over ``batches`` until 3 consecutive window means are within
    ``stability`` (relative) of each other, or ``max_seconds`` pass. ``run`` may process
    ``in_flight`` requests of the batch at once; throughput counts them all."""
    per_call = _warm_up(run, batches, warmup_seconds)
    per_window = max(3, int(window_seconds / max(per_call, 1e-6)))
    windows: list[list[float]] = []
    deadline = time.perf_counter() + max_seconds
    index = 0
    while True:
        window = []
        for _ in range(per_window):
            batch = batches[index % len(batches)]
            index += 1
            started = time.perf_counter()
            run(batch)
            window.append(time.perf_counter() - started)
        windows.append(window)
        stable = len(windows) >= 3 and _agree(windows[-3:], stability)
        if stable or time.perf_counter() > deadline:
            latencies = [t for w in windows[-3:] for t in w]
            return Measurement(latencies, stable, len(windows), batch_size, in_flight)


def _warm_up(run: Callable[[Any], Any], batches: Sequence[Any], seconds: float) -> float:
    """Run until ``seconds`` pass (at least 3 calls); returns the last call's duration."""
    end = time.perf_counter() + seconds
    calls, last = 0, 0.0
    while calls < 3 or time.perf_counter() < end:
        started = time.perf_counter()
        run(batches[calls % len(batches)])
        last = time.perf_counter() - started
        calls += 1
    return last


def _agree(windows: list[list[float]], tolerance: float) -> bool:
    means = [sum(w) / len(w) for w in windows]
    centre = sum(means) / len(means)
    return all(abs(m - centre) <= tolerance * centre for m in means)
