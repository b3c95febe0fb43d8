"""What a Ray worker does for one stage of ``edgepipe run --executor ray``: the same stage code
as a local run, against the node's own cache (``EDGEPIPE_CACHE`` of the node, else the
per-user default).

1. Agreement: the node computes the stage's key itself (its tool versions, its hardware facts,
   the recipe's files as it sees them, its toolchain) and refuses to build when the key differs
   from the one the driver planned, naming what differs: an artifact must never be stored
   under a key that does not describe it.
2. Inputs come from the remote cache by their digests, each object verified on arrival.
3. The stage runs as locally: in a child forked from a server that has torch & co imported,
   so its memory is returned when it ends and the worker, reused by later tasks, imports them
   once. A stage that measures time or uses a GPU runs in the worker itself, a fresh process
   (``max_calls=1``) that gets Ray's thread count and ``CUDA_VISIBLE_DEVICES`` for that task.
4. The output is stored in the node's cache and pushed to the remote *before* the task
   reports success, so that the driver (and any later stage, on any node) can pull it.

Results go back as plain dicts: a stage's failure is a result, not a Ray error, so that Ray
retries only what Ray is for (a node or worker that died).
"""

from __future__ import annotations

__all__ = ["node_facts", "node_name", "run_stage"]

import shutil
import socket
import traceback
from pathlib import Path
from typing import Any

from edgepipe.errors import EdgepipeError, StageError, summarize_exception


def node_name() -> str:
    """``host/abcd1234``: the host and the start of the Ray node id (two nodes may share a host)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return f"{socket.gethostname()}/{node_id[:8]}"


def node_facts(recipe, stage_id: str) -> dict[str, Any]:
    """The facts of this node that enter the stage's key (tool versions, hardware), and the
    stage's preflight problems here: planning for a stage pinned to this node uses them."""
    from edgepipe.env import tool_versions
    from edgepipe.graph import PipelineGraph

    graph = PipelineGraph(recipe)
    stage, spec = graph.stage(stage_id), graph.spec(stage_id)
    return {
        "node": node_name(),
        "tools": tool_versions(stage.tools_for(spec)),
        "extra": stage.key_extra(spec),
        "problems": stage.preflight(spec, recipe.base_dir),
    }


def run_stage(task: dict[str, Any]) -> dict[str, Any]:
    """Build ``task["plan"]`` on this node; ``{"status": "ok", "record": …}`` or an error."""
    node = node_name()
    plan = task["plan"]
    try:
        record = _build(task, plan)
    except EdgepipeError as exc:
        return {"status": "error", "node": node, "message": str(exc), **_log_of(exc)}
    except Exception as exc:  # a library's error: its traceback goes to the driver's log file
        return {
            "status": "crash",
            "node": node,
            "message": summarize_exception(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        }
    return {"status": "ok", "node": node, "record": record.model_dump(mode="json")}


def _build(task: dict[str, Any], plan):
    from edgepipe.cache import Cache
    from edgepipe.cache.remote import RemoteCache
    from edgepipe.executor import preload_for
    from edgepipe.graph import PipelineGraph
    from edgepipe.planner import index_name
    from edgepipe.stage_build import StageBuilder, private_copy

    cache = Cache(None)
    graph = PipelineGraph(task["recipe"])
    _check_agreement(graph, cache, plan)
    remote = RemoteCache(task["remote"], cache, task.get("remote_options"))
    workdir = cache.new_workdir(f"ray-{index_name(plan.stage_id)}")
    try:
        inputs = workdir / "inputs"  # the stage reads its inputs as a local run's out folder
        spec = graph.spec(plan.stage_id)
        for upstream, digest in zip(spec.input_ids(), plan.key_document["inputs"], strict=True):
            try:
                remote.pull_tree(digest)
            except FileNotFoundError:
                raise StageError(
                    f"input '{upstream}' ({digest[:12]}) is not in the remote cache "
                    f"{task['remote']}: the driver pushes inputs before it submits a stage; "
                    "was the remote cleared meanwhile?"
                ) from None
            cache.materialize_tree(digest, inputs / upstream, copy_if=private_copy)
        builder = StageBuilder(
            graph, cache, inputs, isolate=task["fork"], recorded=task["recorded"]
        )
        if task["fork"]:  # a child forked from this worker's warm server, as in a local run
            builder.preload = preload_for(set(graph.stage(plan.stage_id).tools_for(spec)))
        _prepare_toolchain(builder, graph, cache, plan.stage_id)
        try:
            record = builder.build(plan)
        except EdgepipeError as exc:
            exc.error_log = inputs / f"{plan.stage_id}.error.log"  # read by _log_of
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    remote.push(record)  # before success is reported: the driver pulls it next
    return record


def _log_of(exc: EdgepipeError) -> dict[str, str]:
    """A library traceback the stage wrote to a log file on this node, for the driver's."""
    path: Path | None = getattr(exc, "error_log", None)
    try:
        return {"traceback": path.read_text(), "log_path": str(path)} if path else {}
    except OSError:
        return {}


def _check_agreement(graph, cache, plan) -> None:
    """Refuse to build under a key this node's environment does not reproduce."""
    from edgepipe.key_documents import explain
    from edgepipe.planner import Planner

    spec = graph.spec(plan.stage_id)
    key, document = Planner(graph, cache).key_for(plan.stage_id, plan.key_document["inputs"])
    if key == plan.key:
        return
    differences = explain(plan.key_document, document, spec.input_ids())
    raise StageError(
        f"this node does not match the key the driver planned "
        f"({'; '.join(differences)}), so what it built would be stored under a key that does "
        "not describe it: install the same versions on every node (pip install -c "
        "constraints.txt), check out the same recipe files, or pin the stage to matching "
        "nodes with resources.node"
    )


def _prepare_toolchain(builder, graph, cache, stage_id: str) -> None:
    """A stage that runs in an isolated toolchain gets it built on this node (once per node)."""
    from edgepipe.toolchains.environments import build_toolchain, built_python, toolchain_root

    toolchain = graph.stage(stage_id).toolchain_for(graph.spec(stage_id))
    if toolchain is None:
        return
    import logging

    root = toolchain_root(cache.root)
    python = built_python(toolchain, root) or build_toolchain(
        toolchain, root, logging.getLogger("edgepipe.ray")
    )
    builder.toolchain_pythons[stage_id] = python
