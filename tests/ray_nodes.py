"""A Ray cluster of two nodes on this machine, started with the ``ray`` CLI as users do (`ray
start --head`, then a node joining it), each node with its own edgepipe cache; and the matrix
recipe the Ray test and ``benchmarks/ray_matrix.py`` build on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GRID = """
version: 1
name: ray-grid
matrix:
  model: [test_resnet, test_efficientnet]
stages:
  load: {type: load, name: "${model}"}
  onnx: {type: export, input: load, exporter: torchscript}
  onnx_parity: {type: parity, input: onnx, max_images: 4}
  ir: {type: convert-openvino, input: onnx}
  ir_parity: {type: parity, input: ir, reference: load, max_images: 4}
  ts: {type: export-torchscript, input: load}
  ts_parity: {type: parity, input: ts, reference: load, max_images: 4}
  bench:
    type: benchmark
    inputs: ["onnx[*]", "ir[*]", "ts[*]"]
    batch_sizes: [1]
    warmup_seconds: 0.05
    window_seconds: 0.05
    max_seconds: 1
"""
# The test's grid: the same without OpenVINO (11 stages, not 15), to keep the suite short
SMALL_GRID = (
    GRID.replace("  ir: {type: convert-openvino, input: onnx}\n", "")
    .replace("  ir_parity: {type: parity, input: ir, reference: load, max_images: 4}\n", "")
    .replace(', "ir[*]"', "")
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRayNodes:
    """Two Ray nodes started with the ``ray`` CLI; node name → its edgepipe cache."""

    def __init__(self, root: Path):
        """``root``: where the nodes' caches go."""
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.caches = {"head": root / "cache-head", "worker": root / "cache-worker"}
        self.python_paths: dict[str, str] = {}
        """Node → folders put before the project on its PYTHONPATH (other package versions)."""
        # a short folder: Ray's unix sockets live under it (a path limit of 107 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        self.ray = str(Path(sys.executable).parent / "ray")

    def env(self, node: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "EDGEPIPE_CACHE": str(self.caches.setdefault(node, self.root / f"cache-{node}")),
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [self.python_paths.get(node), str(REPO)])
                ),
                "RAY_USAGE_STATS_ENABLED": "0",
                # a lost node is declared dead after ~2 s, not Ray's default ~15 s
                "RAY_health_check_period_ms": "500",
                "RAY_health_check_failure_threshold": "4",
                "OMP_NUM_THREADS": "1",
            }
        )
        return env

    def start(self, node: str) -> None:
        common = [
            "--num-cpus=1",
            f"--labels=role={node}",
            f"--node-name={node}",
            "--object-store-memory=80000000",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            "--disable-usage-stats",
        ]
        where = (
            [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--temp-dir={self.temp}",
            ]
            if node == "head"
            else [f"--address={self.address}"]
        )
        subprocess.run(
            [self.ray, "start", *where, *common],
            env=self.env(node),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def kill(self, node: str) -> None:
        """SIGKILL the node's raylet (its workers go with it) and agents: a machine lost."""
        pids = [pid for pid in self._pids(str(self.temp)) if pid in self._pids(f"node-name={node}")]
        assert pids, f"no process of node {node}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _pids(pattern: str) -> list[int]:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        """Kill this cluster's processes only (`ray stop` would stop every Ray on the machine):
        each one's command line names the cluster's temp folder."""
        for _ in range(3):
            pids = self._pids(str(self.temp))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.5)
        shutil.rmtree(self.temp, ignore_errors=True)
