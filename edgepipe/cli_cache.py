"""`edgepipe cache …` commands: inspect and maintain the artifact cache."""

from __future__ import annotations

__all__ = ["cache_app"]

from typing import Annotated

import typer
from rich.markup import escape

from edgepipe.cli_common import CacheOpt, RemoteOpt, err, open_cache, open_remote, out
from edgepipe.errors import ExitCode

cache_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain the artifact cache.")


@cache_app.command("info")
def cache_info(cache: CacheOpt = None) -> None:
    """Where the cache is and how big."""
    for key, value in open_cache(cache).info().items():
        out.print(f"{key:>12}: {value}")


@cache_app.command("ls")
def cache_ls(cache: CacheOpt = None) -> None:
    """List cached stage results."""
    from edgepipe.cli_display import action_table

    out.print(action_table(open_cache(cache).iter_actions()))


@cache_app.command("verify")
def cache_verify(cache: CacheOpt = None, remote: RemoteOpt = None) -> None:
    """Re-hash every object and check every record; exit 5 on corruption.

    With --remote (or $EDGEPIPE_REMOTE), the remote cache is verified instead.
    """
    store = open_cache(cache)
    target = open_remote(remote, store) or store
    problems = target.verify()
    for problem in problems:
        err.print(f"[red]corrupt[/]: {escape(problem)}")
    if problems:
        raise typer.Exit(ExitCode.CACHE_CORRUPT)
    where = f"remote cache {remote}" if remote else "cache"
    out.print(f"[green]ok[/]: {where} verified, nothing corrupt")


@cache_app.command("gc")
def cache_gc(
    cache: CacheOpt = None,
    older_than_days: Annotated[
        float | None, typer.Option("--older-than", help="Drop results unused for this many days.")
    ] = None,
    max_size_gb: Annotated[
        float | None,
        typer.Option("--max-size", help="Shrink the cache to this many GB (least recently used)."),
    ] = None,
) -> None:
    """Remove unreferenced objects and leftovers of killed runs."""
    stats = open_cache(cache).gc(
        older_than_seconds=older_than_days * 86400 if older_than_days is not None else None,
        max_size_bytes=int(max_size_gb * 1e9) if max_size_gb is not None else None,
    )
    out.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in stats.items()))


@cache_app.command("clear")
def cache_clear(
    cache: CacheOpt = None, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
) -> None:
    """Delete everything in the cache."""
    store = open_cache(cache)
    if not yes and not typer.confirm(f"delete everything under {store.root}?"):
        raise typer.Exit(ExitCode.STAGE_FAILED)
    store.clear()
    out.print(f"cleared {store.root}")
