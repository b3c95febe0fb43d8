"""`edgepipe toolchains`: the isolated environments stages run in, and building one ahead of
time (e.g. in a CI job whose cache folder, toolchains included, survives between jobs)."""

from __future__ import annotations

__all__ = ["register"]

from typing import Annotated

import typer

from edgepipe.cli_common import CacheOpt, open_cache, out
from edgepipe.errors import UsageError


def toolchains(
    build: Annotated[
        list[str] | None,
        typer.Option("--build", help="Build this toolchain now if it is not built (repeatable)."),
    ] = None,
    cache: CacheOpt = None,
) -> None:
    """List the toolchains stages run in (Python, pins, where, built or not); --build one.

    A toolchain is built under the cache (or EDGEPIPE_TOOLCHAINS) the first time a run needs it;
    this builds it ahead of time, with network access, for later offline runs.
    """
    import logging

    from rich.table import Table

    from edgepipe.toolchains import (
        build_toolchain,
        built_python,
        registered_toolchains,
        toolchain_root,
    )

    known = registered_toolchains()
    root = toolchain_root(open_cache(cache).root)
    for name in build or []:
        if name not in known:
            raise UsageError(f"no toolchain {name!r}; known: {', '.join(sorted(known))}")
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        build_toolchain(known[name], root)
    table = Table("toolchain", "python", "packages", "state", "folder", box=None)
    for name, toolchain in sorted(known.items()):
        state = "[green]built[/]" if built_python(toolchain, root) else "not built"
        table.add_row(
            name,
            toolchain.python,
            str(len(toolchain.requirements)),
            state,
            str(root / toolchain.folder_name),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command()(toolchains)
