"""``edgepipe metrics diff``: what a run measured against a baseline, as a table."""

from __future__ import annotations

__all__ = ["register"]

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edgepipe.cli_common import OutOpt, RecipeArg, load_graph, out

metrics_app = typer.Typer(help="The measured numbers of runs (metrics.json), compared.")


@metrics_app.command("diff")
def diff(
    recipe: RecipeArg,
    against: Annotated[
        str | None,
        typer.Option(
            help="A metrics.json file, or a git ref holding the committed <recipe>.metrics.json "
            "(default: that file as it is in the working tree)."
        ),
    ] = None,
    out_dir: OutOpt = None,
    timing_tolerance: Annotated[
        float, typer.Option(min=0, help="Relative change of a timing that counts as moved.")
    ] = 0.10,
    tolerance: Annotated[
        float, typer.Option(min=0, help="Relative change of any other metric that counts.")
    ] = 0.001,
) -> None:
    """Compare the last full run's metrics (<out>/metrics.json) with a baseline."""
    from edgepipe.metrics import METRICS_FILE, baseline_path, diff_rows, read_metrics

    graph = load_graph(recipe)
    current = (out_dir or Path("build") / graph.recipe.name) / METRICS_FILE
    after = read_metrics(current, recipe) if current.is_file() else None
    if after is None:
        from edgepipe.errors import UsageError

        raise UsageError(f"{current}: no metrics yet: run the whole recipe first")
    before = read_metrics(against or baseline_path(recipe), recipe)
    rows = diff_rows(before, after, timing_tolerance, tolerance)
    machines = before.get("machine"), after.get("machine")
    if machines[0] != machines[1]:
        out.print(
            f"[yellow]measured on different machines[/]: {escape(str(machines[0]))} → "
            f"{escape(str(machines[1]))}"
        )
    if not rows:
        out.print("no metric moved")
        return
    table = Table("stage", "metric", "before", "after", "change", "", box=None, pad_edge=False)
    for row in rows:
        style = "red" if row[-1] in ("beyond tolerance", "changed") else "dim"
        table.add_row(*(escape(cell) for cell in row[:-1]), f"[{style}]{row[-1]}[/]")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")
