"""What the CLI modules share: the consoles, option types, and loading a recipe or a cache."""

from __future__ import annotations

__all__ = [
    "CacheOpt",
    "ForceOpt",
    "OnlyOpt",
    "OutOpt",
    "RecipeArg",
    "RemoteOpt",
    "UntilOpt",
    "err",
    "load_graph",
    "open_cache",
    "open_remote",
    "out",
]

import atexit
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
    from edgepipe.cache import Cache

    return Cache(path)


def open_remote(url: str | None, cache):
    if not url:
        return None
    from edgepipe.cache.remote import RemoteCache

    return RemoteCache(url, cache)
