"""What the CLI modules share: the consoles, option types, and loading a recipe or a cache."""

from __future__ import annotations

__all__ = [
    "CacheOpt",
    "Executor",
    "ForceOpt",
    "OnlyOpt",
    "OutOpt",
    "RecipeArg",
    "RemoteOpt",
    "UntilOpt",
    "err",
    "load_graph",
    "open_cache",
    "open_cluster",
    "open_remote",
    "output_folder",
    "out",
    "plan_groups",
]

import atexit
import enum
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

out = Console(highlight=False)
# A duplicate of fd 2: stages redirect fd 2 into their logs, the progress display must not follow.
err = Console(file=os.fdopen(os.dup(2), "w", encoding="utf-8", errors="replace"), highlight=False)
atexit.register(err.file.close)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
OnlyOpt = Annotated[
    list[str] | None, typer.Option("--only", help="Run only this stage (repeatable).")
]
UntilOpt = Annotated[
    list[str] | None, typer.Option("--until", help="Run this stage and its ancestors (repeatable).")
]
ForceOpt = Annotated[
    list[str] | None,
    typer.Option("--force", help="Rebuild this stage even if cached (repeatable)."),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache", envvar="EDGEPIPE_CACHE", help="Cache directory [default: per-user cache dir]."
    ),
]
RemoteOpt = Annotated[
    str | None,
    typer.Option(
        "--remote",
        envvar="EDGEPIPE_REMOTE",
        help="Shared cache on any fsspec filesystem (s3://bucket/prefix, file:///mnt/cache): "
        "pulled on a local miss, pushed after a build. Options: $EDGEPIPE_REMOTE_OPTIONS (JSON).",
    ),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Output folder [default: build/<recipe name>].")
]


def load_graph(recipe_path: Path):
    from edgepipe.graph import PipelineGraph
    from edgepipe.recipe import load_recipe

    return PipelineGraph(load_recipe(recipe_path))


def open_cache(path: Path | None):
    """The cache at ``path`` ($EDGEPIPE_CACHE, else the per-user one); a usage error when it
    cannot be a folder (a regular file, /dev/null, a path under a file, a name too long)."""
    from edgepipe.cache import Cache
    from edgepipe.errors import UsageError
    from edgepipe.user_folders import folder_problem

    cache = Cache(path)
    if problem := folder_problem(cache.root):
        raise UsageError(f"cache folder {cache.root}: {problem}; choose another with --cache")
    return cache


def output_folder(out_dir: Path | None, recipe_name: str) -> Path:
    """``--out``, else build/<recipe name>: a usage error when it cannot be a folder."""
    from edgepipe.errors import UsageError
    from edgepipe.user_folders import folder_problem

    target = out_dir or Path("build") / recipe_name
    if problem := folder_problem(target, probe=True):
        raise UsageError(f"output folder {target}: {problem}; choose another with --out")
    return target


def open_remote(url: str | None, cache):
    if not url:
        return None
    from edgepipe.cache.remote import RemoteCache

    return RemoteCache(url, cache)


class Executor(enum.StrEnum):
    local = "local"
    ray = "ray"


def open_cluster(executor: Executor, address: str | None, remote, graph, cache, in_process: bool):
    """The Ray cluster stages run on (``--executor ray``), or None for a local run; a usage
    error says what is missing before anything is planned."""
    if executor is Executor.local:
        return None
    from edgepipe.errors import PreflightError, UsageError
    from edgepipe.ray_cluster import RayCluster, ray_missing

    if in_process:
        raise UsageError("--in-process runs stages in this process: it cannot use --executor ray")
    if remote is None:
        raise UsageError(
            "--executor ray needs a remote cache that every node reaches (--remote "
            "s3://bucket/prefix or file:///shared/cache, or $EDGEPIPE_REMOTE): stages' inputs "
            "and outputs travel through it"
        )
    if problem := ray_missing():
        raise PreflightError(problem)
    return RayCluster(address, remote, graph)


def plan_groups(graph, selected: list[str], plans) -> dict:
    """``edgepipe plan --groups``: per independent group, the stages a CI job runs with
    ``--until`` (the group's last stages) and how many are not cached yet; then the stages
    that join groups, which the final job (the whole recipe, everything else cached) builds."""
    status = {plan.stage_id: plan.status for plan in plans}
    groups, joins = graph.independent_groups(selected)
    found = []
    for index, group in enumerate(groups, start=1):
        members = set(group)
        leaves = [sid for sid in group if not (graph.descendants(sid) & members)]
        to_run = sum(status[sid] != "cached" for sid in group)
        found.append({"group": index, "until": leaves, "stages": group, "to_run": to_run})
    final = {"stages": joins, "to_run": sum(status[sid] != "cached" for sid in joins)}
    return {"recipe": graph.recipe.name, "groups": found, "final": final}
