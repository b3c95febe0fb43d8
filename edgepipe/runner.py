"""Run a recipe: preflight → plan → for each stage: key → cache hit or run → store → materialise."""

from __future__ import annotations

__all__ = ["RunObserver", "RunResult", "Runner", "StageResult"]

import json
import logging
import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from edgepipe.cache import ActionRecord, Cache
from edgepipe.capture import capture_stage_output
from edgepipe.errors import EdgepipeError, PreflightError, StageFailure
from edgepipe.graph import PipelineGraph
from edgepipe.planner import Planner, StagePlan
from edgepipe.stages.base import ARTIFACT_FILE, Artifact, StageContext

log = logging.getLogger(__name__)
Outcome = Literal["built", "cached", "failed", "skipped"]


@dataclass
class StageResult:
    stage_id: str
    stage_type: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""
    output_size: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    out_dir: Path
    stages: list[StageResult]

    @property
    def failed(self) -> list[StageResult]:
        return [s for s in self.stages if s.outcome == "failed"]


class RunObserver(Protocol):
    def stage_started(self, plan: StagePlan) -> None: ...
    def stage_finished(self, result: StageResult) -> None: ...


class _Silent:
    def stage_started(self, plan: StagePlan) -> None:
        pass

    def stage_finished(self, result: StageResult) -> None:
        pass


class Runner:
    """Executes the selected stages of a graph against a cache."""

    def __init__(
        self,
        graph: PipelineGraph,
        cache: Cache,
        out_dir: Path,
        force: set[str] | None = None,
        observer: RunObserver | None = None,
    ):
        self.graph = graph
        self.cache = cache
        self.out_dir = out_dir
        self.planner = Planner(graph, cache, force)
        self.observer = observer or _Silent()

    def preflight(self, plans: list[StagePlan]) -> None:
        """Check every stage that will run before any runs; one error lists all problems."""
        problems = []
        for plan in plans:
            if plan.status == "cached":
                continue
            if plan.status == "blocked":
                problems += [f"stage '{plan.stage_id}': {r}" for r in plan.reasons]
                continue
            stage, spec = self.graph.stage(plan.stage_id), self.graph.spec(plan.stage_id)
            for problem in stage.preflight(spec, self.graph.recipe.base_dir):
                problems.append(f"stage '{plan.stage_id}' ({plan.stage_type}): {problem}")
        if problems:
            raise PreflightError("cannot run; nothing was started:\n" + "\n".join(problems))

    def run(self, selected: list[str]) -> RunResult:
        """Run ``selected`` stages; raises :class:`StageFailure` if any failed (others kept)."""
        plans = self.planner.plan(selected)
        self.preflight(plans)
        known: dict[str, str] = {}
        for stage_id in self.graph.order(self._ancestors_of(selected)):
            plan = self.planner.lookup(stage_id, known)
            known[stage_id] = plan.record.output_digest
            self._materialize(stage_id, plan.record.output_digest)
        results = [self._run_one(plan.stage_id, known) for plan in plans]
        failures = {r.stage_id: r.message for r in results if r.outcome == "failed"}
        if failures:
            skipped = [r.stage_id for r in results if r.outcome == "skipped"]
            raise StageFailure(failures, skipped)
        return RunResult(self.out_dir, results)

    def _ancestors_of(self, selected: list[str]) -> set[str]:
        chosen = set(selected)
        return {a for sid in selected for a in self.graph.ancestors(sid)} - chosen

    def _run_one(self, stage_id: str, known: dict[str, str]) -> StageResult:
        spec = self.graph.spec(stage_id)
        missing = [u for u in spec.input_ids() if u not in known]
        if missing:
            result = StageResult(
                stage_id, spec.type, "skipped", message=f"input '{missing[0]}' failed"
            )
            self.observer.stage_finished(result)
            return result
        plan = self.planner.lookup(stage_id, known)
        self.observer.stage_started(plan)
        started = time.perf_counter()
        try:
            record, built = self._cached_or_built(plan)
        except Exception as exc:  # any stage failure is reported; only this stage is lost
            result = StageResult(
                stage_id,
                spec.type,
                "failed",
                time.perf_counter() - started,
                self._failure_message(stage_id, exc),
                reasons=plan.reasons,
            )
            self.observer.stage_finished(result)
            return result
        self.cache.record_key_document(self.graph.recipe.name, stage_id, plan.key_document)
        known[stage_id] = record.output_digest
        self._materialize(stage_id, record.output_digest)
        outcome: Outcome = "built" if built else "cached"
        result = StageResult(
            stage_id,
            spec.type,
            outcome,
            time.perf_counter() - started,
            output_size=record.output_size,
            reasons=plan.reasons,
            warnings=_stage_warnings(record.log) if built else [],
        )
        self.observer.stage_finished(result)
        return result

    def _cached_or_built(self, plan: StagePlan) -> tuple[ActionRecord, bool]:
        if plan.status == "cached":
            return plan.record, False
        # Another process may be building the same action: wait for it rather than build twice.
        with self.cache.lock(f"action-{plan.key}"):
            if plan.stage_id not in self.planner.force:
                record = self.cache.get_action(plan.key)
                if record is not None:
                    return record, False
            return self._build(plan), True

    def _build(self, plan: StagePlan) -> ActionRecord:
        stage, spec = self.graph.stage(plan.stage_id), self.graph.spec(plan.stage_id)
        workdir = self.cache.new_workdir(plan.stage_id)
        out = workdir / "out"
        out.mkdir()
        lines: list[str] = []
        started = time.perf_counter()
        try:
            inputs = [
                Artifact.read(self.out_dir / up, up, digest)
                for up, digest in zip(spec.input_ids(), plan.key_document["inputs"], strict=True)
            ]
            ctx = StageContext(
                plan.stage_id,
                self.graph.recipe.base_dir,
                inputs,
                out,
                logging.getLogger(f"edgepipe.stage.{plan.stage_id}"),
            )
            with capture_stage_output(lines):
                meta = stage.run(spec, ctx)
            kind = stage.output_kind(spec)
            (out / ARTIFACT_FILE).write_text(
                json.dumps({"kind": kind.value, "meta": meta}, indent=2, sort_keys=True)
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
                log="\n".join(lines),
                seconds=time.perf_counter() - started,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self.cache.put_action(record)
            return record
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _failure_message(self, stage_id: str, exc: Exception) -> str:
        if isinstance(exc, EdgepipeError):
            return str(exc)
        # A library error (torch, onnx…) is usually about the model, not a bug in edgepipe:
        # show its first line and keep the traceback in a log file next to the outputs.
        log_file = self.out_dir / f"{stage_id}.error.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("".join(traceback.format_exception(exc)))
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        return f"{type(exc).__name__}: {first} (traceback: {log_file})"

    def _materialize(self, stage_id: str, digest: str) -> None:
        self.cache.materialize_tree(digest, self.out_dir / stage_id)


def _stage_warnings(log_text: str) -> list[str]:
    """Warnings a stage itself logged (not library noise): shown under the stage's line."""
    prefix = "WARNING edgepipe.stage."
    return [
        line.split(": ", 1)[1]
        for line in log_text.splitlines()
        if line.startswith(prefix) and ": " in line
    ]
