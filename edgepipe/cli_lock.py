"""`edgepipe check` and `edgepipe diff`: the lockfile as a CI drift gate and a PR review aid."""

from __future__ import annotations

__all__ = ["check_lock_or_fail", "register"]

from pathlib import Path

import typer

from edgepipe.cli_common import CacheOpt, RecipeArg, load_graph, open_cache, out
from edgepipe.errors import DriftError


def _differences(recipe: Path, graph, store) -> tuple[Path, list[str]]:
    from edgepipe.lockfile import check_lock, lock_path, read_lock
    from edgepipe.planner import Planner

    path = lock_path(recipe)
    return path, check_lock(graph, Planner(graph, store), read_lock(path))


def check_lock_or_fail(recipe: Path, graph, store) -> None:
    """Raise :class:`DriftError` (exit 6) listing every difference from the lockfile."""
    path, differences = _differences(recipe, graph, store)
    if differences:
        raise DriftError(str(path), differences)


def check(recipe: RecipeArg, cache: CacheOpt = None) -> None:
    """Fail (exit 6) if the recipe, inputs or toolchain no longer match the lockfile.

    The CI drift gate: runs nothing and needs no cache; prints each difference.
    """
    check_lock_or_fail(recipe, load_graph(recipe), open_cache(cache))
    out.print("[green]ok[/]: the lockfile matches")


def diff(recipe: RecipeArg, cache: CacheOpt = None) -> None:
    """Show what changed between the lockfile and the recipe as it is now."""
    _, differences = _differences(recipe, load_graph(recipe), open_cache(cache))
    for line in differences or ["no differences"]:
        print(line)


def register(app: typer.Typer) -> None:
    app.command()(check)
    app.command()(diff)
