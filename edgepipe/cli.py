"""Command line: the only module that prints or exits. Logic lives in the modules it calls."""

from __future__ import annotations

__all__ = ["app", "main"]

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgepipe.cli_cache import cache_app
from edgepipe.cli_common import (
    CacheOpt,
    Executor,
    ForceOpt,
    OnlyOpt,
    OutOpt,
    RecipeArg,
    RemoteOpt,
    UntilOpt,
    err,
    load_graph,
    open_cache,
    open_cluster,
    open_remote,
    out,
    output_folder,
    plan_groups,
)
from edgepipe.cli_lock import check_lock_or_fail
from edgepipe.cli_lock import register as register_lock_commands
from edgepipe.cli_metrics import register as register_metrics_commands
from edgepipe.cli_toolchains import register as register_toolchain_commands
from edgepipe.errors import EdgepipeError, ExitCode, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Declarative, cached, verified model-conversion pipelines.",
)


@app.command()
def run(
    recipe: RecipeArg,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    force: ForceOpt = None,
    out_dir: OutOpt = None,
    cache: CacheOpt = None,
    remote: RemoteOpt = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Run up to N independent stages at once.")
    ] = 1,
    check: Annotated[
        bool, typer.Option("--check", help="Fail (exit 6) if the lockfile is out of date.")
    ] = False,
    lock: Annotated[
        bool, typer.Option(help="Write <recipe>.lock after a full successful run.")
    ] = True,
    in_process: Annotated[
        bool,
        typer.Option("--in-process", help="Run stages in this process, one at a time (debugging)."),
    ] = False,
    executor: Annotated[
        Executor,
        typer.Option(
            help="Where stages run: this machine, or a Ray cluster (needs --remote: artifacts "
            "travel through it)."
        ),
    ] = Executor.local,
    address: Annotated[
        str | None,
        typer.Option(
            help="--executor ray: the cluster's head (HOST:6379, ray://HOST:10001); default "
            "$RAY_ADDRESS, else a Ray instance private to this run.",
            envvar="RAY_ADDRESS",
        ),
    ] = None,
) -> None:
    """Build (or reuse) every artifact of the recipe.

    Each stage that runs does so in a child process, so its memory is returned when it ends.
    """
    started = time.time_ns()  # the no-op record trusts nothing that changed after this
    from edgepipe.cli_display import RunDisplay, done_line
    from edgepipe.lockfile import lock_path, recorded_settings
    from edgepipe.noop_record import NoopRecorder
    from edgepipe.runner import Runner

    graph = load_graph(recipe)
    selected = graph.select(only, until)
    target = output_folder(out_dir, graph.recipe.name)
    store = open_cache(cache)
    noop = NoopRecorder(
        started,
        recipe,
        graph,
        selected,
        store,
        only=only,
        until=until,
        force=force,
        out=out_dir,
        remote=remote,
        jobs=jobs,
        check=check,
        lock=lock,
        in_process=in_process,
    )
    if check:
        check_lock_or_fail(recipe, graph, store)
    remote_cache = open_remote(remote, store)
    with RunDisplay(err, id_width=max(map(len, selected), default=0) + 1) as display:
        runner = Runner(
            graph,
            store,
            target,
            set(force or []),
            display,
            isolate=not in_process,
            remote=remote_cache,
            jobs=jobs,
            recorded=recorded_settings(recipe),
            lock_file=lock_path(recipe) if lock else None,
            cluster=open_cluster(executor, address, remote_cache, graph, store, in_process),
        )
        result = runner.run(selected)
    built = sum(r.outcome == "built" for r in result.stages)
    err.print(done_line(built, len(result.stages) - built, target))
    noop.finish(runner, result, target=target, console=err, id_width=display.id_width)


@app.command()
def plan(
    recipe: RecipeArg,
    only: OnlyOpt = None,
    until: UntilOpt = None,
    force: ForceOpt = None,
    cache: CacheOpt = None,
    remote: RemoteOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    groups: Annotated[
        bool, typer.Option("--groups", help="JSON: independent stage groups, one CI job each.")
    ] = False,
) -> None:
    """Say which stages are cached and which will run, and why."""
    from edgepipe.planner import Planner

    graph = load_graph(recipe)
    selected = graph.select(only, until)
    store = open_cache(cache)
    plans = Planner(graph, store, set(force or []), open_remote(remote, store)).plan(selected)
    if groups:
        out.print_json(json.dumps(plan_groups(graph, selected, plans)))
        return
    from edgepipe.cli_display import plan_rows, plan_table

    if as_json:
        out.print_json(json.dumps(plan_rows(plans)))
        return
    out.print(plan_table(plans))


@app.command()
def report(recipe: RecipeArg, cache: CacheOpt = None) -> None:
    """Print the latest parity, evaluate and benchmark results as Markdown (from the cache)."""
    from edgepipe.report import recipe_report

    print(recipe_report(load_graph(recipe), open_cache(cache)), end="")


@app.command()
def validate(
    recipes: Annotated[
        list[Path] | None, typer.Argument(help="Recipe files.", show_default=False)
    ] = None,
) -> None:
    """Check recipes (fields, references, cycles, artifact kinds) without running anything."""
    if not recipes:
        raise UsageError(
            "no recipe given: `edgepipe validate RECIPE.yaml...` checks the recipe files it is "
            "given, e.g. `edgepipe validate pipelines/*.yaml`"
        )
    for recipe in recipes:
        graph = load_graph(recipe)
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
    pipeline = load_graph(recipe)
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


@app.command()
def runtimes() -> None:
    """List the runtimes that parity, evaluate and benchmark open artifacts with."""
    from edgepipe.cli_display import runtime_table
    from edgepipe.runtimes import registered_runtimes

    out.print(runtime_table(registered_runtimes()))


register_lock_commands(app)
register_metrics_commands(app)
register_toolchain_commands(app)
app.add_typer(cache_app, name="cache")


def main() -> None:
    """Entry point: every expected error becomes one message and an exit code."""
    from edgepipe.processes import Interrupted, signals_stop_the_run

    try:
        with signals_stop_the_run():
            code = app(standalone_mode=False)
    except EdgepipeError as exc:
        err.print(f"[bold red]error[/]: {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        stopped = ", ".join(f"'{s}'" for s in exc.stopped)
        what = f"stopped {stopped} and removed its temporary files; " if stopped else ""
        err.print(f"[red]interrupted[/] ({exc}): {what}finished stages stay cached")
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C at a prompt into Abort
        err.print("[red]interrupted[/]")
        sys.exit(ExitCode.INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
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
