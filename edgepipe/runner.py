"""Run a recipe: preflight → plan → for each stage: key → cache hit or run → store → materialise."""

from __future__ import annotations

__all__ = ["RunObserver", "RunResult", "Runner", "StageResult"]

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.cache import ActionRecord, Cache, CacheCorruptError
from edgepipe.cache.remote import RemoteCache, RemoteCacheError
from edgepipe.errors import CacheError, PreflightError, StageFailure, StageInterrupted
from edgepipe.executor import preflight_isolated, preload_for, start_server
from edgepipe.graph import PipelineGraph
from edgepipe.planner import Planner, StagePlan, index_name
from edgepipe.run_results import (
    RunObserver,
    RunResult,
    SilentObserver,
    StageResult,
    stage_warnings,
)
from edgepipe.scheduler import Demand, memory_budget_gb, schedule
from edgepipe.stage_build import StageBuilder, private_copy
from edgepipe.toolchains.declared import Toolchain
from edgepipe.toolchains.environments import (
    build_toolchain,
    built_python,
    toolchain_problems,
    toolchain_root,
)

if TYPE_CHECKING:
    from edgepipe.ray_cluster import RayCluster

log = logging.getLogger(__name__)


class Runner:
    """Executes the selected stages of a graph against a cache."""

    def __init__(
        self,
        graph: PipelineGraph,
        cache: Cache,
        out_dir: Path,
        force: set[str] | None = None,
        observer: RunObserver | None = None,
        isolate: bool = True,
        remote: RemoteCache | None = None,
        jobs: int = 1,
        recorded: dict[str, dict[str, Any]] | None = None,
        lock_file: Path | None = None,
        cluster: RayCluster | None = None,
    ):
        self.graph = graph
        self.cache = cache
        self.out_dir = out_dir
        self.planner = Planner(graph, cache, force, remote)
        # --executor ray: stages are built on the cluster's nodes, which schedule them
        self.cluster = cluster
        if cluster is not None:
            self.planner.node_facts = cluster.facts
        self.observer = observer or SilentObserver()
        self.isolate = isolate
        # in-process stages share the process's fds and root logger, which output capture
        # redirects: two at once would swap each other's logs
        self.jobs = jobs if isolate else 1
        self.builder = StageBuilder(graph, cache, out_dir, isolate, recorded or {})
        # written after a successful run of every stage: the lockfile describes whole recipes
        self.lock_file = lock_file

    def preflight(self, plans: list[StagePlan]) -> None:
        """Check every stage that will run before any runs; one error lists all problems."""
        problems = [
            f"stage '{plan.stage_id}': {reason}"
            for plan in plans
            if plan.status == "blocked"
            for reason in plan.reasons
        ]
        to_check = [p for p in plans if p.status == "run"]
        if self.cluster is not None:  # placement first: a label no node has stops everything
            problems += self.cluster.placement_problems([p.stage_id for p in to_check])
            problems += self.cluster.pinned_problems([p.stage_id for p in to_check])
            # the rest are checked here: the nodes must have the driver's versions anyway
            to_check = [p for p in to_check if not self.cluster.pinned(p.stage_id)]
        for plan, found in zip(to_check, self._preflight_problems(to_check), strict=True):
            problems += [f"stage '{plan.stage_id}' ({plan.stage_type}): {p}" for p in found]
        for toolchain, stage_ids in self._toolchains(to_check).items():
            problems += [
                f"stage '{stage_ids[0]}': {problem}"
                for problem in toolchain_problems(toolchain, toolchain_root(self.cache.root))
            ]
        if problems:
            raise PreflightError("cannot run; nothing was started:\n" + "\n".join(problems))

    def _toolchains(self, plans: list[StagePlan]) -> dict[Toolchain, list[str]]:
        """The toolchains these stages run in, each with the ids of the stages that use it."""
        wanted: dict[Toolchain, list[str]] = {}
        for plan in plans:
            toolchain = self.graph.stage(plan.stage_id).toolchain_for(
                self.graph.spec(plan.stage_id)
            )
            if toolchain is not None:
                wanted.setdefault(toolchain, []).append(plan.stage_id)
        return wanted

    def _build_toolchains(self, plans: list[StagePlan]) -> None:
        """Build (once per machine) the toolchains of the stages that will run, before any runs:
        a build that fails stops the run with nothing started, like a failed preflight."""
        root = toolchain_root(self.cache.root)
        for toolchain, stage_ids in self._toolchains(
            [p for p in plans if p.status == "run"]
        ).items():
            python = built_python(toolchain, root)
            if python is None:
                self.observer.notice(
                    f"building toolchain '{toolchain.name}' (Python {toolchain.python}, "
                    f"{len(toolchain.requirements)} packages) in {root}: once per machine"
                )
                python = build_toolchain(toolchain, root, log)
            for stage_id in stage_ids:
                self.builder.toolchain_pythons[stage_id] = python

    def _preflight_problems(self, plans: list[StagePlan]) -> list[list[str]]:
        base_dir = self.graph.recipe.base_dir
        if not self.isolate:
            return [
                self.graph.stage(p.stage_id).preflight(self.graph.spec(p.stage_id), base_dir)
                for p in plans
            ]
        checks = [
            {
                "stage_type": p.stage_type,
                "spec": self.graph.spec(p.stage_id).model_dump(mode="json", exclude_unset=True),
            }
            for p in plans
        ]
        return preflight_isolated(checks, base_dir, self.builder.preload) if checks else []

    def run(self, selected: list[str]) -> RunResult:
        """Run ``selected`` stages; raises :class:`StageFailure` if any failed (others kept)."""
        plans = self.planner.plan(selected)
        self._refuse_builds_in_read_only_cache(plans)
        if self.cache.writable():  # what killed runs left behind goes before anything new
            self.cache.reclaim_abandoned(self.out_dir)
        tools = {
            t
            for p in plans
            if p.status != "cached"
            for t in self.graph.stage(p.stage_id).tools_for(self.graph.spec(p.stage_id))
        }
        self.builder.preload = preload_for(tools)
        local_builds = self.isolate and self.cluster is None
        if local_builds and any(p.status == "run" for p in plans):
            start_server(self.builder.preload)  # its imports overlap with the preflight below
        self.preflight(plans)
        if self.cluster is None:  # on a cluster, each node builds the toolchains it runs
            self._build_toolchains(plans)
        known: dict[str, str] = {}
        for stage_id in self.graph.order(self._ancestors_of(selected)):
            plan = self.planner.lookup(stage_id, known)
            known[stage_id] = plan.record.output_digest
            self._materialize(stage_id, plan.record.output_digest)
        chosen = set(selected)
        results = schedule(
            [plan.stage_id for plan in plans],
            inputs=lambda sid: [u for u in self.graph.spec(sid).input_ids() if u in chosen],
            prepare=lambda sid: self._prepare(sid, known),
            execute=lambda plan: self._execute(plan, known),
            demand=self._demand if self.cluster is None else lambda _: Demand(),
            jobs=self.jobs if self.cluster is None else max(1, len(plans)),
            memory_budget_gb=memory_budget_gb() if self.cluster is None else float("inf"),
        )
        failures = {r.stage_id: r.message for r in results if r.outcome == "failed"}
        if failures:
            skipped = [r.stage_id for r in results if r.outcome == "skipped"]
            raise StageFailure(failures, skipped)
        if set(selected) == set(self.graph.order()):  # both describe whole recipes
            from edgepipe.lockfile import recipe_lock, write_lock
            from edgepipe.metrics import recipe_metrics, write_metrics

            write_metrics(self.out_dir, recipe_metrics(self.graph, self.out_dir))
            if self.lock_file is not None:
                write_lock(self.lock_file, recipe_lock(self.graph, self.planner, self.out_dir))
        return RunResult(self.out_dir, results)

    def _refuse_builds_in_read_only_cache(self, plans: list[StagePlan]) -> None:
        to_build = [p.stage_id for p in plans if p.status == "run"]
        if to_build and not self.cache.writable():
            raise CacheError(
                f"the cache {self.cache.root} is read-only and {len(to_build)} stage(s) need "
                f"building ({', '.join(to_build)}); a read-only cache serves fully cached runs "
                "only: use a writable --cache (or EDGEPIPE_CACHE) to build"
            )

    def _ancestors_of(self, selected: list[str]) -> set[str]:
        chosen = set(selected)
        return {a for sid in selected for a in self.graph.ancestors(sid)} - chosen

    def _demand(self, stage_id: str) -> Demand:
        spec, stage = self.graph.spec(stage_id), self.graph.stage(stage_id)
        gpu, memory_gb = spec.resources.gpu or stage.uses_gpu, spec.resources.memory_gb
        return Demand(gpu=gpu, memory_gb=memory_gb, alone=stage.measures_time)

    def _prepare(self, stage_id: str, known: dict[str, str]) -> tuple[bool, Any]:
        """On the scheduling thread: skip a stage whose input failed, else plan it."""
        spec = self.graph.spec(stage_id)
        missing = [u for u in spec.input_ids() if u not in known]
        if missing:
            result = StageResult(
                stage_id, spec.type, "skipped", message=f"input '{missing[0]}' failed"
            )
            self.observer.stage_finished(result)
            return False, result
        plan = self.planner.lookup(stage_id, known)
        self.observer.stage_started(plan)
        return True, plan

    def _execute(self, plan: StagePlan, known: dict[str, str]) -> StageResult:
        """On a worker thread: reuse or build, record, materialise."""
        started = time.perf_counter()
        try:
            record, built = self._reuse_or_build(plan)
        except StageInterrupted as exc:  # the main thread reports the interruption
            return StageResult(plan.stage_id, plan.stage_type, "skipped", message=str(exc))
        except Exception as exc:  # any stage failure is reported; only this stage is lost
            result = StageResult(
                plan.stage_id,
                plan.stage_type,
                "failed",
                time.perf_counter() - started,
                self.builder.failure_message(plan.stage_id, exc),
                reasons=plan.reasons,
            )
            self.observer.stage_finished(result)
            return result
        self.cache.record_key_document(
            self.graph.recipe.name, index_name(plan.stage_id), plan.key_document
        )
        known[plan.stage_id] = record.output_digest
        result = StageResult(
            plan.stage_id,
            plan.stage_type,
            "built" if built else "cached",
            time.perf_counter() - started,
            output_size=record.output_size,
            reasons=plan.reasons,
            warnings=plan.warnings + (stage_warnings(record.log) if built else []),
            peak_rss_bytes=record.peak_rss_bytes if built else 0,
            node=self.cluster.ran_on.get(plan.stage_id, "") if self.cluster and built else "",
        )
        self.observer.stage_finished(result)
        return result

    def _reuse_or_build(self, plan: StagePlan) -> tuple[ActionRecord, bool]:
        """Reuse or build the output, and materialise it. A hit whose objects gc evicted
        meanwhile is no hit any more (records are checked against their objects): rebuilt."""
        record, built = self._cached_or_built(plan)
        try:
            self._materialize(plan.stage_id, record.output_digest)
        except CacheCorruptError as exc:
            if built:
                raise
            log.warning("%s: cached output unusable (%s); building again", plan.stage_id, exc)
            plan.status = "run"
            record, built = self._cached_or_built(plan)
            self._materialize(plan.stage_id, record.output_digest)
        return record, built

    def _cached_or_built(self, plan: StagePlan) -> tuple[ActionRecord, bool]:
        if plan.status == "cached":
            return plan.record, False
        # Another process may be building the same action: wait for it rather than build twice.
        with self.cache.lock(f"action-{plan.key}"):
            if plan.stage_id not in self.planner.force:
                record = self.planner.find(plan.key)
                if record is not None:
                    return record, False
            if self.cluster is not None:
                recorded = self.builder.recorded.get(plan.stage_id)
                record = self.cluster.build(plan, recorded, self.out_dir)
            else:
                record = self.builder.build(plan)
        self._push(record)
        return record, True

    def _push(self, record: ActionRecord) -> None:
        remote = self.planner.remote
        if remote is None:
            return
        try:
            remote.push(record)
        except RemoteCacheError as exc:
            log.warning("could not push %s to the remote cache: %s", record.stage_id, exc)

    def _materialize(self, stage_id: str, digest: str) -> None:
        self.cache.materialize_tree(digest, self.out_dir / stage_id, copy_if=private_copy)
