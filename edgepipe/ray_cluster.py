"""Run a recipe's stages on a Ray cluster: ``edgepipe run RECIPE --executor ray``.

The driver plans exactly as a local run does (keys, cache hits, the lockfile); each stage that
must be built becomes one Ray task (:func:`edgepipe.ray_worker.run_stage`), and artifacts travel
through the remote cache, never through Ray's object store. Ray does the scheduling:

- ``resources: {gpu, memory_gb, custom, node}`` become ``num_gpus``, ``memory``, custom
  ``resources`` and a ``label_selector``; every task takes one CPU;
- a stage runs as locally, in a child forked from the worker's warm server (its memory is
  returned when it ends); one that uses a GPU or measures time gets a fresh worker process of
  its own (``max_calls=1``), with Ray's ``CUDA_VISIBLE_DEVICES`` and thread count for it;
- ``max_retries=1``: a stage whose node or worker dies is run once more, elsewhere if need be;
  a stage that fails on its own is not retried (it would fail again);
- a stage keyed by its machine (a benchmark, a TensorRT engine, AOTInductor's compiled code) is
  pinned to one node chosen before planning, and its key takes that node's facts (a probe task
  there): the key describes the machine that builds it. A benchmark also takes all of its
  node's CPUs, so that nothing else runs there while it measures.
"""

from __future__ import annotations

__all__ = ["RayCluster", "ray_missing"]

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from edgepipe.cache import ActionRecord
from edgepipe.cache.remote import REMOTE_OPTIONS_ENV, RemoteCache
from edgepipe.errors import PreflightError, StageError, StageInterrupted
from edgepipe.graph import PipelineGraph
from edgepipe.processes import is_stopping

INSTALL_HINT = "pip install 'edgepipe[ray]'"
_POLL_SECONDS = 0.25


def ray_missing() -> str | None:
    """Why ``--executor ray`` cannot work here, or None."""
    if importlib.util.find_spec("ray") is None:
        return f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}"
    return None


class RayCluster:
    """The driver's side: connection, placement, key facts of pinned stages, task submission."""

    def __init__(self, address: str | None, remote: RemoteCache, graph: PipelineGraph):
        self.address = address
        self.remote = remote
        self.graph = graph
        self.ran_on: dict[str, str] = {}
        """Stage id → the node that built it (``host/node-id``), for the display and report."""
        self._nodes: list[dict[str, Any]] | None = None
        self._pins: dict[str, dict[str, Any]] = {}
        self._pinned: dict[str, bool] = {}
        self._facts: dict[str, dict[str, Any]] = {}

    # -- connection and nodes -------------------------------------------------------------

    def connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        settings: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        options = os.environ.get(REMOTE_OPTIONS_ENV)
        if options:  # workers open the remote as the driver does
            settings["runtime_env"] = {"env_vars": {REMOTE_OPTIONS_ENV: options}}
        try:
            if self.address:
                ray.init(address=self.address, **settings)
            else:  # $RAY_ADDRESS, else a private single-node cluster on this machine
                ray.init(**settings)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or os.environ.get("RAY_ADDRESS") or "a local instance"
            raise PreflightError(
                f"cannot connect to the Ray cluster at {where}: {exc}; start one with "
                "`ray start --head` (and `ray start --address HEAD:6379` on each other node), "
                "then pass --address HEAD:6379"
            ) from None

    def nodes(self) -> list[dict[str, Any]]:
        if self._nodes is None:
            import ray

            self.connect()
            alive = [n for n in ray.nodes() if n.get("Alive")]
            self._nodes = sorted(alive, key=lambda n: n["NodeID"])
        return self._nodes

    # -- placement ------------------------------------------------------------------------

    def pinned(self, stage_id: str) -> bool:
        """Keyed by its machine, or timing: runs on one node chosen before planning."""
        # asked by planning, preflight and submission alike; key_extra may probe the GPU
        if stage_id not in self._pinned:
            stage, spec = self.graph.stage(stage_id), self.graph.spec(stage_id)
            self._pinned[stage_id] = stage.measures_time or bool(stage.key_extra(spec))
        return self._pinned[stage_id]

    def _wants(self, stage_id: str) -> tuple[dict[str, str], dict[str, float], float]:
        spec, stage = self.graph.spec(stage_id), self.graph.stage(stage_id)
        gpus = 1.0 if spec.resources.gpu or stage.uses_gpu else 0.0
        return dict(spec.resources.node), dict(spec.resources.custom), gpus

    def _matching(self, stage_id: str) -> list[dict[str, Any]]:
        labels, custom, gpus = self._wants(stage_id)
        wanted = {**custom, **({"GPU": gpus} if gpus else {})}
        return [
            node
            for node in self.nodes()
            if all((node.get("Labels") or {}).get(k) == v for k, v in labels.items())
            and all(node["Resources"].get(k, 0) >= v for k, v in wanted.items())
        ]

    def placement_problems(self, stage_ids: list[str]) -> list[str]:
        """Stages that no node of the cluster can take, each with what is missing."""
        problems = []
        for stage_id in stage_ids:
            if self._matching(stage_id):
                continue
            labels, custom, gpus = self._wants(stage_id)
            wanted = [f"label {k}={v}" for k, v in labels.items()]
            wanted += [f"resource {k}: {v:g}" for k, v in custom.items()]
            wanted += ["a GPU"] if gpus else []
            problems.append(
                f"stage '{stage_id}': no node of the Ray cluster has {' and '.join(wanted)} "
                f"({len(self.nodes())} node(s): {self._describe_nodes()})"
            )
        return problems

    def _describe_nodes(self) -> str:
        return "; ".join(
            f"{n['NodeID'][:8]} labels {_user_labels(n)} resources "
            + json.dumps({k: v for k, v in n["Resources"].items() if not k.startswith("node:")})
            for n in self.nodes()
        )

    def _pin(self, stage_id: str) -> dict[str, Any]:
        """The node a pinned stage runs on: the matching node with most CPUs (then by id)."""
        if stage_id not in self._pins:
            matching = self._matching(stage_id)
            if not matching:
                raise PreflightError(
                    "cannot run; nothing was started:\n"
                    + "\n".join(self.placement_problems([stage_id]))
                )
            self._pins[stage_id] = max(matching, key=lambda n: n["Resources"].get("CPU", 0))
        return self._pins[stage_id]

    def options(self, stage_id: str) -> dict[str, Any]:
        """Ray task options of a stage."""
        labels, custom, gpus = self._wants(stage_id)
        spec = self.graph.spec(stage_id)
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 1, "retry_exceptions": False}
        if gpus:
            options["num_gpus"] = gpus
        if spec.resources.memory_gb:
            options["memory"] = int(spec.resources.memory_gb * 2**30)
        if custom:
            options["resources"] = custom
        if self.pinned(stage_id):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = self._pin(stage_id)
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False
            )
            if self.graph.stage(stage_id).measures_time:  # the node to itself while it measures
                options["num_cpus"] = node["Resources"].get("CPU", 1)
        elif labels:
            options["label_selector"] = labels
        return options

    # -- planning facts of pinned stages --------------------------------------------------

    def facts(self, stage_id: str) -> tuple[dict, dict | None] | None:
        """For the planner: a pinned stage's (tools, extra) as its node sees them."""
        if not self.pinned(stage_id):
            return None
        return self._probe(stage_id)["tools"], self._probe(stage_id)["extra"]

    def pinned_problems(self, stage_ids: list[str]) -> list[str]:
        """Preflight problems of pinned stages, found on their nodes (not on the driver)."""
        return [
            f"stage '{stage_id}' (on node {self._probe(stage_id)['node']}): {problem}"
            for stage_id in stage_ids
            if self.pinned(stage_id)
            for problem in self._probe(stage_id)["problems"]
        ]

    def _probe(self, stage_id: str) -> dict[str, Any]:
        if stage_id not in self._facts:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from edgepipe.ray_worker import node_facts

            strategy = NodeAffinitySchedulingStrategy(self._pin(stage_id)["NodeID"], soft=False)
            probe = ray.remote(node_facts).options(num_cpus=0, scheduling_strategy=strategy)
            self._facts[stage_id] = self._wait(probe.remote(self.graph.recipe, stage_id), stage_id)
        return self._facts[stage_id]

    # -- building -------------------------------------------------------------------------

    def build(self, plan, recorded: dict[str, Any] | None, out_dir: Path) -> ActionRecord:
        """Build ``plan`` on the cluster; the record, pulled into the local cache."""
        import ray

        from edgepipe.ray_worker import run_stage

        for digest in plan.key_document["inputs"]:  # built here or pulled: the node pulls them
            self.remote.push_tree(digest)
        task = {
            "recipe": self.graph.recipe,
            "plan": plan,
            "remote": self.remote.url,
            "recorded": {plan.stage_id: recorded} if recorded else {},
        }
        options = self.options(plan.stage_id)
        stage, spec = self.graph.stage(plan.stage_id), self.graph.spec(plan.stage_id)
        # A fresh worker process (max_calls=1) for what needs Ray's per-task environment (GPU
        # isolation, the thread count of a benchmark's CPUs); the rest fork from a warm worker
        fresh = stage.measures_time or stage.uses_gpu or spec.resources.gpu
        task["fork"] = not fresh
        stage_task = ray.remote(max_calls=1 if fresh else 0)(run_stage).options(**options)
        result = self._wait(stage_task.remote(task), plan.stage_id)
        node = result["node"]
        if result["status"] != "ok":
            raise StageError(_failure(plan.stage_id, result, out_dir))
        record = self.remote.pull(plan.key)
        if record is None:
            raise StageError(
                f"node {node} reported stage '{plan.stage_id}' built, but its record is not in "
                f"the remote cache {self.remote.url}"
            )
        self.ran_on[plan.stage_id] = node
        return record

    def _wait(self, ref, stage_id: str) -> Any:
        """The task's result; a stopped run cancels it, a dead node is a StageError."""
        import ray
        from ray.exceptions import RayError

        while not ray.wait([ref], timeout=_POLL_SECONDS)[0]:
            if is_stopping():
                ray.cancel(ref, force=True)
                raise StageInterrupted(f"stage '{stage_id}' was stopped")
        try:
            return ray.get(ref)
        except RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise StageError(
                f"its Ray task was lost ({type(exc).__name__}: {first[:300]}); a worker or node "
                "that dies is retried once, this one failed again or could not be placed"
            ) from None


def _failure(stage_id: str, result: dict[str, Any], out_dir: Path) -> str:
    """The node's message, its traceback kept in the driver's log file as locally."""
    message, node = result["message"], result["node"]
    if "traceback" not in result:
        return f"{message} (on node {node})"
    log_file = out_dir / f"{stage_id}.error.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(result["traceback"])
    if result.get("log_path"):
        return f"{message.replace(result['log_path'], str(log_file))} (on node {node})"
    return f"{message} (on node {node}; traceback: {log_file})"


def _user_labels(node: dict[str, Any]) -> str:
    labels = {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")}
    return json.dumps(labels, sort_keys=True)
