"""--executor ray vs a local run: the matrix recipe of the Ray test (2 models x 3 targets, parity
on each, one benchmark), built from empty caches locally with --jobs 1 and 2, and on a two-node
Ray cluster started on this machine (each node one CPU, its own cache; a file:// remote).

.venv/bin/python benchmarks/ray_matrix.py

On one 2-core machine the Ray run cannot beat --jobs 2 (same cores, and each stage starts a
fresh worker process instead of forking from a warm server); what it adds is that the nodes can
be other machines. The table shows what the executor costs per stage.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from _common import REPO, edgepipe_run, table

sys.path.insert(0, str(REPO / "tests"))
from ray_nodes import GRID, LocalRayNodes  # noqa: E402


def _built(stderr: str) -> str:
    return str(len(re.findall(r"^\s*built ", stderr, re.M)))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for jobs in (1, 2):
            folder = root / f"local{jobs}"
            folder.mkdir()
            (folder / "grid.yaml").write_text(GRID)
            seconds, result = edgepipe_run(
                "run", "grid.yaml", "--jobs", str(jobs), cache=folder / "cache", cwd=folder
            )
            rows.append([f"local --jobs {jobs}", f"{seconds:.1f}", "1", _built(result.stderr)])
        nodes = LocalRayNodes(root / "ray")
        try:
            nodes.start("head")
            nodes.start("worker")
            folder = root / "cluster"
            folder.mkdir()
            (folder / "grid.yaml").write_text(GRID)
            args = ["--executor", "ray", "--address", nodes.address]
            args += ["--remote", (root / "remote").as_uri()]
            seconds, result = edgepipe_run(
                "run", "grid.yaml", *args, cache=folder / "c", cwd=folder
            )
            used = str(len(set(re.findall(r"\bon (\S+)$", result.stderr, re.M))))
            rows.append(["--executor ray, 2 nodes", f"{seconds:.1f}", used, _built(result.stderr)])
            again, result = edgepipe_run(
                "run",
                "grid.yaml",
                *args,
                cache=folder / "c",
                cwd=folder,
                env={"EDGEPIPE_NO_FAST_PATH": "1"},
            )
            rows.append(["--executor ray, again", f"{again:.1f}", "-", _built(result.stderr)])
        finally:
            nodes.stop()
    print(table(["run", "cold wall s", "nodes", "stages built"], rows))


if __name__ == "__main__":
    main()
