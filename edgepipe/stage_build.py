"""Build one stage: run its code (in a child process), store its output, record the action.

The runner decides *whether* a stage runs; this module does the running, in a fresh work
directory under the cache's tmp/ that is removed whatever happens (a stopped or failed stage
leaves nothing behind), and turns a failure into one readable message.
"""

from __future__ import annotations

__all__ = ["StageBuilder", "private_copy"]

import errno
import json
import os
import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgepipe.artifacts import ARTIFACT_FILE, Artifact
from edgepipe.cache import ActionRecord, Cache
from edgepipe.errors import EdgepipeError, StageError, StageInterrupted, summarize_exception
from edgepipe.executor import StageOutcome, run_in_process, run_isolated
from edgepipe.graph import PipelineGraph
from edgepipe.planner import StagePlan, index_name

# Below this much free space, a failed stage is reported as "disk full": a write that runs
# out of space fills the disk to the last block, so what is left is far less than this.
_NEARLY_FULL_BYTES = 4 << 20


class StageBuilder:
    """Runs stages' code and stores what they make; shared by the runner's worker threads."""

    def __init__(
        self,
        graph: PipelineGraph,
        cache: Cache,
        out_dir: Path,
        isolate: bool,
        recorded: dict[str, dict[str, Any]],
    ):
        self.graph = graph
        self.cache = cache
        self.out_dir = out_dir
        self.isolate = isolate
        # lockfile.recorded_settings: a stage rebuilt under its recorded key reproduces its choice
        self.recorded = recorded
        self.preload: list[str] = []
        self.toolchain_pythons: dict[str, Path] = {}
        """Stage id → the interpreter of its built toolchain (the runner builds them first)."""

    def build(self, plan: StagePlan) -> ActionRecord:
        """Run the stage, store its output tree and action record; raise on failure."""
        stage, spec = self.graph.stage(plan.stage_id), self.graph.spec(plan.stage_id)
        workdir = self.cache.new_workdir(index_name(plan.stage_id))
        out = workdir / "out"
        out.mkdir()
        started = time.perf_counter()
        try:
            outcome = self._run_stage_code(plan, out)
            kind = stage.output_kind(spec)
            (out / ARTIFACT_FILE).write_text(
                json.dumps({"kind": kind.value, "meta": outcome.meta}, indent=2, sort_keys=True)
            )
            digest = self.cache.put_tree(out)
            record = ActionRecord(
                key=plan.key,
                recipe=self.graph.recipe.name,
                stage_id=plan.stage_id,
                stage_type=spec.type,
                key_document=plan.key_document,
                output_digest=digest,
                output_kind=kind.value,
                output_size=self.cache.tree_size(digest),
                log="\n".join(outcome.log_lines),
                seconds=time.perf_counter() - started,
                peak_rss_bytes=outcome.peak_rss_bytes,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self.cache.put_action(record)
            return record
        except StageInterrupted:
            raise
        except Exception as exc:
            # Checked before the work directory goes: the partial output still fills the disk.
            full = disk_full(exc, workdir)
            if full is None:
                raise
            raise StageError(f"{full}: {self.failure_message(plan.stage_id, exc)}") from exc
        finally:
            # never raises: a cleanup error must not replace the stage's own result or error
            shutil.rmtree(workdir, ignore_errors=True)

    def failure_message(self, stage_id: str, exc: Exception) -> str:
        """One line for the user; a library's traceback goes to a log file beside the outputs."""
        if isinstance(exc, EdgepipeError):
            return str(exc)
        # A library error (torch, onnx…) is usually about the model, not a bug in edgepipe:
        # show its first line and keep the traceback in a log file next to the outputs.
        log_file = self.out_dir / f"{stage_id}.error.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("".join(traceback.format_exception(exc)))
        return f"{summarize_exception(exc)} (traceback: {log_file})"

    def _run_stage_code(self, plan: StagePlan, out: Path) -> StageOutcome:
        """Run the stage's code, in a child process unless isolation is off (debugging)."""
        spec = self.graph.spec(plan.stage_id)
        inputs = self._input_artifacts(spec, plan.key_document["inputs"])
        payload = {
            "stage_type": spec.type,
            "spec": spec.model_dump(mode="json", exclude_unset=True),
            "stage_id": plan.stage_id,
            "recipe_dir": str(self.graph.recipe.base_dir),
            "out_dir": str(out),
            "inputs": inputs,
        }
        if plan.stage_id in self.toolchain_pythons:
            payload["toolchain_python"] = str(self.toolchain_pythons[plan.stage_id])
        recorded = self.recorded.get(plan.stage_id)
        if recorded and recorded.get("key") == plan.key:
            payload["recorded"] = recorded
        error_log = self.out_dir / f"{plan.stage_id}.error.log"
        if self.isolate:
            return run_isolated(payload, self.preload, error_log)
        return run_in_process(payload, error_log)

    def _input_artifacts(self, spec, digests: list[str]) -> list[Artifact]:
        return [
            Artifact.read(self.out_dir / up, up, digest)
            for up, digest in zip(spec.input_ids(), digests, strict=True)
        ]


def disk_full(exc: BaseException, workdir: Path) -> str | None:
    """ "no space left on device …" naming the path, if that is why ``exc`` happened.

    Libraries hide it (OpenVINO says "basic_ios::clear: iostream error", an exporter blames
    itself), so besides an ENOSPC anywhere in the exception chain, a failure with the work
    directory's disk (nearly) full counts.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            where = seen.filename or workdir
            return f"no space left on device (writing {where})"
        seen = seen.__cause__ or seen.__context__
    try:
        stats = os.statvfs(workdir)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= _NEARLY_FULL_BYTES:
        return None
    return (
        f"no space left on device: the disk holding {workdir.parent} has {free // 1024} KiB "
        "free (free some space, or move the cache with --cache/EDGEPIPE_CACHE)"
    )


def private_copy(path: str) -> bool:
    """ONNX external-data files must be copies: onnx and ONNX Runtime refuse a weights file with
    several hard links (a guard against hard-link attacks), so it cannot share the cache's."""
    return path.endswith(".data")
