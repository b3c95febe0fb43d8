"""Command line: the only module that prints or exits. Logic lives in the modules it calls."""

from __future__ import annotations

__all__ = ["app", "main"]

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgepipe.errors import EdgepipeError, ExitCode

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Declarative, cached, verified model-conversion pipelines.",
)
cache_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain the artifact cache.")
app.add_typer(cache_app, name="cache")
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


def _load(recipe_path: Path):
    from edgepipe.graph import PipelineGraph
    from edgepipe.recipe import load_recipe

    return PipelineGraph(load_recipe(recipe_path))


def _cache(path: Path | None):
    from edgepipe.cache import Cache

    return Cache(path)


@app.command()
def run(
    recipe: RecipeArg,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    force: ForceOpt = None,
    out_dir: OutOpt = None,
    cache: CacheOpt = None,
    remote: RemoteOpt = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run stages in this process (debugging).")
    ] = False,
) -> None:
    """Build (or reuse) every artifact of the recipe.

    Each stage that runs does so in a child process, so its memory is returned when it ends.
    """
    from edgepipe.cli_display import RunDisplay
    from edgepipe.runner import Runner

    graph = _load(recipe)
    selected = graph.select(only, until)
    _check_force(graph, force)
    target = out_dir or Path("build") / graph.recipe.name
    with RunDisplay(err, id_width=max(map(len, selected), default=0) + 1) as display:
        store = _cache(cache)
        runner = Runner(
            graph,
            store,
            target,
            set(force or []),
            display,
            isolate=not in_process,
            remote=_remote(remote, store),
        )
        result = runner.run(selected)
    built = sum(r.outcome == "built" for r in result.stages)
    err.print(f"[green]done[/]: {built} built, {len(result.stages) - built} cached → {target}")


@app.command()
def plan(
    recipe: RecipeArg,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    force: ForceOpt = None,
    cache: CacheOpt = None,
    remote: RemoteOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Say which stages are cached and which will run, and why."""
    from edgepipe.planner import Planner

    graph = _load(recipe)
    selected = graph.select(only, until)
    _check_force(graph, force)
    store = _cache(cache)
    plans = Planner(graph, store, set(force or []), _remote(remote, store)).plan(selected)
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "stage": p.stage_id,
                        "type": p.stage_type,
                        "status": p.status,
                        "reasons": p.reasons,
                        "key": p.key,
                    }
                    for p in plans
                ]
            )
        )
        return
    table = Table("stage", "type", "status", "why", box=None, pad_edge=False)
    style = {"cached": "green", "run": "yellow", "blocked": "red"}
    for p in plans:
        label = "will run" if p.status == "run" else p.status
        table.add_row(
            p.stage_id, p.stage_type, f"[{style[p.status]}]{label}[/]", "; ".join(p.reasons)
        )
    out.print(table)


@app.command()
def report(recipe: RecipeArg, cache: CacheOpt = None) -> None:
    """Print the latest parity, evaluate and benchmark results as Markdown (from the cache)."""
    from edgepipe.report import recipe_report

    print(recipe_report(_load(recipe), _cache(cache)), end="")


@app.command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe files.")]) -> None:
    """Check recipes (fields, references, cycles, artifact kinds) without running anything."""
    for recipe in recipes:
        graph = _load(recipe)
        out.print(f"[green]ok[/] {recipe}: {len(graph.recipe.stages)} stages")


@app.command()
def schema(
    output: Annotated[Path, typer.Option("--out", help="Where to write the JSON schema.")] = Path(
        "schemas/recipe.schema.json"
    ),
    check: Annotated[bool, typer.Option("--check", help="Fail if the file is stale.")] = False,
) -> None:
    """Write the recipe JSON schema (for editor completion and validation)."""
    from edgepipe.schema import recipe_schema_text

    text = recipe_schema_text()
    if check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            err.print(f"[red]{output} is stale[/]: run `edgepipe schema`")
            raise typer.Exit(ExitCode.STAGE_FAILED)
        out.print(f"[green]ok[/] {output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    out.print(f"wrote {output}")


@app.command()
def graph(
    recipe: RecipeArg,
    fmt: Annotated[str, typer.Option("--format", help="mermaid or dot.")] = "mermaid",
) -> None:
    """Print the stage graph as Mermaid or Graphviz dot."""
    if fmt not in ("mermaid", "dot"):
        raise typer.BadParameter("--format must be 'mermaid' or 'dot'")
    pipeline = _load(recipe)
    print(pipeline.mermaid() if fmt == "mermaid" else pipeline.dot())


@app.command()
def stages(
    stage_type: Annotated[str | None, typer.Argument(help="Show only this type.")] = None,
) -> None:
    """List stage types and their fields."""
    from edgepipe.cli_display import stage_table
    from edgepipe.stages import registered_stages

    known = registered_stages()
    if stage_type and stage_type not in known:
        raise typer.BadParameter(f"unknown stage type; known: {', '.join(sorted(known))}")
    for name in [stage_type] if stage_type else sorted(known):
        out.print(stage_table(known[name]))


@cache_app.command("info")
def cache_info(cache: CacheOpt = None) -> None:
    """Where the cache is and how big."""
    for key, value in _cache(cache).info().items():
        out.print(f"{key:>12}: {value}")


@cache_app.command("ls")
def cache_ls(cache: CacheOpt = None) -> None:
    """List cached stage results."""
    from edgepipe.cli_display import action_table

    out.print(action_table(_cache(cache).iter_actions()))


@cache_app.command("verify")
def cache_verify(cache: CacheOpt = None) -> None:
    """Re-hash every object and check every record; exit non-zero on corruption."""
    problems = _cache(cache).verify()
    for problem in problems:
        err.print(f"[red]corrupt[/]: {problem}")
    if problems:
        raise typer.Exit(ExitCode.CACHE_CORRUPT)
    out.print("[green]ok[/]: cache verified, nothing corrupt")


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
    stats = _cache(cache).gc(
        older_than_seconds=older_than_days * 86400 if older_than_days is not None else None,
        max_size_bytes=int(max_size_gb * 1e9) if max_size_gb is not None else None,
    )
    out.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in stats.items()))


@cache_app.command("clear")
def cache_clear(
    cache: CacheOpt = None, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
) -> None:
    """Delete everything in the cache."""
    store = _cache(cache)
    if not yes and not typer.confirm(f"delete everything under {store.root}?"):
        raise typer.Exit(ExitCode.STAGE_FAILED)
    store.clear()
    out.print(f"cleared {store.root}")


def _remote(url: str | None, cache):
    if not url:
        return None
    from edgepipe.cache.remote import RemoteCache

    return RemoteCache(url, cache)


def _check_force(graph, force: list[str] | None) -> None:
    if force:
        graph.select(only=force)  # raises a readable error for unknown ids


def main() -> None:
    """Entry point: every expected error becomes one message and an exit code."""
    try:
        code = app(standalone_mode=False)
    except EdgepipeError as exc:
        err.print(f"[bold red]error[/]: {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: finished stages stay cached")
        sys.exit(ExitCode.INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # bad command-line usage (typer's click exceptions)
        exc.show()
        sys.exit(ExitCode.USAGE)
    except Exception:  # anything else is a bug in edgepipe
        err.print_exception()
        err.print(
            "[bold red]internal error[/]: this is a bug in edgepipe; please report it "
            "with the traceback above"
        )
        sys.exit(ExitCode.BUG)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
