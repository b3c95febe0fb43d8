"""The benchmark's torch.compile rows must compute what eager computes: before a compiled
module is timed, it meets the fp32 parity gates against eager on the benchmark's photos, as any
artifact does in a parity stage (a compiler bug that changes the numbers fails the stage)."""

from __future__ import annotations

__all__ = ["compiled_parity"]

from pathlib import Path
from typing import Any

from edgepipe.errors import StageError
from edgepipe.stages.base import Artifact


def compiled_parity(reference: Artifact, compiled: Any, images: list, recipe_dir: Path) -> str:
    """ "passed", or StageError naming the broken gates and the photos."""
    from edgepipe.runtimes.torch_eager import open_reference, run_on_image
    from edgepipe.stages.parity.compare import compare
    from edgepipe.stages.parity.gates import Thresholds, gates_for

    eager = open_reference(reference, recipe_dir)
    names, ref_runs, cand_runs = [], [], []
    for index, image in enumerate(images):
        ref, cand = run_on_image(eager, compiled, image)
        names.append(f"photo-{index}")
        ref_runs.append(ref)
        cand_runs.append(cand)
    trained = eager.weights in ("pretrained", "checkpoint")
    gates = gates_for("fp32", Thresholds(), trained=trained)
    comparison = compare(names, ref_runs, cand_runs, compiled, gates["decided_margin"])
    failed = comparison.breaches(gates)
    if failed:
        raise StageError(f"{compiled.label} does not compute what eager does: {'; '.join(failed)}")
    return "passed"
