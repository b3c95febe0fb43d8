"""Decide, without running anything, which stages are cached and which will run — and why."""

from __future__ import annotations

__all__ = ["Planner", "StagePlan", "index_name"]

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgepipe.cache import ActionRecord, Cache, action_key, canonical_json
from edgepipe.cache.remote import RemoteCache, RemoteCacheError
from edgepipe.env import tool_versions
from edgepipe.errors import RecipeError, RecipeIssue, UsageError
from edgepipe.graph import PipelineGraph
from edgepipe.key_documents import explain, key_document
from edgepipe.recipe_limits import special_file_kind

Status = Literal["cached", "run", "blocked"]


def index_name(stage_id: str) -> str:
    """A matrix id like onnx[resnet50,int8] as a plain file name for the cache's run index."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stage_id)


log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    """The planned fate of one stage.

    ``run`` with no key means the key depends on an upstream output that is about to be rebuilt
    (if that rebuild yields identical bytes, the stage turns out cached after all).
    ``blocked`` means an input is outside the selection and not in the cache.
    """

    stage_id: str
    stage_type: str
    status: Status
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    key_document: dict[str, Any] | None = None
    record: ActionRecord | None = None
    warnings: list[str] = field(default_factory=list)


class Planner:
    """Computes action keys and looks them up; imports no ML library."""

    def __init__(
        self,
        graph: PipelineGraph,
        cache: Cache,
        force: set[str] | None = None,
        remote: RemoteCache | None = None,
    ):
        self.graph = graph
        self.cache = cache
        self.force = force or set()
        self.remote = remote
        # one key per stage and input digests for the whole run: planning, running and the
        # lockfile all ask, and a key hashes files and reads tool versions
        self._keys: dict[tuple[str, tuple[str, ...]], tuple[str, dict[str, Any]]] = {}
        self.node_facts: Callable[[str], tuple[dict, dict | None] | None] | None = None
        """Where a stage runs on another machine (a Ray node pinned for it): that machine's
        (tool versions, extra facts) for its key, so the key describes the artifact built."""

    def find(self, key: str) -> ActionRecord | None:
        """The action record for ``key``: local cache first, then the remote (pulled locally)."""
        record = self.cache.get_action(key)
        if record is None and self.remote is not None:
            try:
                record = self.remote.pull(key)
            except RemoteCacheError as exc:  # an unreachable remote must not stop local work
                log.warning("remote cache disabled for this run: %s", exc)
                self.remote = None
        return record

    def key_for(self, stage_id: str, input_digests: list[str]) -> tuple[str, dict[str, Any]]:
        """Action key and key document of a stage whose inputs' output digests are known."""
        memo = (stage_id, tuple(input_digests))
        if memo not in self._keys:
            self._keys[memo] = self._compute_key(stage_id, input_digests)
        return self._keys[memo]

    def _compute_key(self, stage_id: str, input_digests: list[str]) -> tuple[str, dict[str, Any]]:
        spec, stage = self.graph.spec(stage_id), self.graph.stage(stage_id)
        files = {
            name: self._content_digest(path, stage_id, name)
            for name, path in stage.key_files(spec, self.graph.recipe.base_dir).items()
        }
        facts = self.node_facts(stage_id) if self.node_facts else None
        tools, extra = facts or (tool_versions(stage.tools_for(spec)), stage.key_extra(spec))
        toolchain = stage.toolchain_for(spec)
        document = key_document(
            stage,
            spec,
            input_digests,
            files,
            tools,
            extra,
            toolchain.key_facts() if toolchain else None,
        )
        return action_key(document), document

    def _content_digest(self, path: Path, stage_id: str, name: str) -> str:
        """A file's sha256, or for a folder the sha256 of its (relative path, digest) listing."""
        if special := special_file_kind(path):  # a FIFO or a device: hashing it would hang
            issue = RecipeIssue(f"{path} is a {special}, not a regular file", None, stage_id, name)
            raise RecipeError(self.graph.recipe.path, [issue])
        if not path.is_dir():
            return self.cache.file_digest(path)
        listing = [
            [file.relative_to(path).as_posix(), self.cache.file_digest(file)]
            for file in sorted(path.rglob("*"))
            if file.is_file() and not any(p.startswith(".") for p in file.relative_to(path).parts)
        ]
        return hashlib.sha256(canonical_json(listing)).hexdigest()

    def lookup(self, stage_id: str, known: dict[str, str]) -> StagePlan:
        """Plan one stage given the output digests ``known`` so far (stage id → digest)."""
        spec = self.graph.spec(stage_id)
        plan = StagePlan(stage_id, spec.type, "run")
        pending = [up for up in spec.input_ids() if up not in known]
        if pending:
            plan.reasons = [f"input '{up}' will be rebuilt" for up in pending]
            return plan
        plan.key, plan.key_document = self.key_for(stage_id, [known[u] for u in spec.input_ids()])
        if stage_id in self.force:  # rebuilt whatever is stored, so never pulled from a remote
            plan.record = self.cache.get_action(plan.key)
            plan.reasons = ["--force"]
            self._note_damage(plan)
            return plan
        plan.record = self.find(plan.key)
        if plan.record is not None:
            plan.status = "cached"
            return plan
        previous = self.cache.last_key_document(self.graph.recipe.name, index_name(stage_id))
        plan.reasons = explain(previous, plan.key_document, spec.input_ids())
        self._note_damage(plan)
        return plan

    def _check_force(self, selected: list[str]) -> None:
        if not self.force:
            return
        self.graph.select(only=sorted(self.force))  # a readable error for an unknown id
        if outside := sorted(self.force - set(selected)):
            raise UsageError(
                f"--force {outside[0]}: that stage is not selected by --only/--until, "
                "so it would not run"
            )

    def _note_damage(self, plan: StagePlan) -> None:
        damage = self.cache.damaged.get(plan.key)
        if damage:
            plan.reasons = [f"cached output was corrupt ({damage})"]
            plan.warnings = [f"the cached output was corrupt ({damage}): removed and rebuilt"]

    def plan(self, selected: list[str]) -> list[StagePlan]:
        """Plans for ``selected`` (in order); unselected ancestors are looked up, never run.

        Raises:
            GraphError: ``--force`` names a stage the recipe does not have.
            UsageError: ``--force`` names a stage that is not selected, so it would not run.
        """
        self._check_force(selected)
        needed = set(selected)
        for stage_id in selected:
            needed |= self.graph.ancestors(stage_id)
        known: dict[str, str] = {}
        plans: dict[str, StagePlan] = {}
        for stage_id in self.graph.order(needed):
            plan = self.lookup(stage_id, known)
            if stage_id not in selected and plan.status != "cached":
                plan.status = "blocked"
            if plan.status == "cached":
                known[stage_id] = plan.record.output_digest
            plans[stage_id] = plan
        for stage_id in selected:
            blockers = [u for u in self.graph.ancestors(stage_id) if plans[u].status == "blocked"]
            if blockers and plans[stage_id].status != "cached":
                plans[stage_id].status = "blocked"
                plans[stage_id].reasons = [
                    f"input '{u}' is not built and not selected (add --until {stage_id})"
                    for u in sorted(blockers)
                ]
        return [plans[sid] for sid in selected]
