"""Rich renderings used by the CLI: live run progress and tables."""

from __future__ import annotations

__all__ = [
    "RunDisplay",
    "action_table",
    "done_line",
    "plan_rows",
    "plan_table",
    "runtime_table",
    "stage_table",
]

import threading
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgepipe.planner import StagePlan
from edgepipe.run_results import StageResult
from edgepipe.stages.base import Stage

_STYLE = {"built": "green", "cached": "cyan", "failed": "bold red", "skipped": "yellow"}


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


class RunDisplay:
    """Observer for the runner: one spinner naming the running stages, a line per finished one.

    Called from worker threads under ``--jobs``, hence the lock.
    """

    def __init__(self, console: Console, id_width: int = 20):
        self.console = console
        self.id_width = id_width
        self._status = None
        self._running: dict[str, str] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RunDisplay:
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._stop()

    def stage_started(self, plan: StagePlan) -> None:
        if plan.status == "cached":
            return
        why = escape(f" ({'; '.join(plan.reasons)})") if plan.reasons else ""
        with self._lock:
            self._running[plan.stage_id] = (
                f"[bold]{escape(plan.stage_id)}[/] ({plan.stage_type}){why}"
            )
            self._refresh()

    def notice(self, message: str) -> None:
        """A line about the run itself (e.g. a toolchain being built), not about one stage."""
        with self._lock:
            self.console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)

    def stage_finished(self, result: StageResult) -> None:
        with self._lock:
            self._running.pop(result.stage_id, None)
            self._stop()
            self._print(result)
            self._refresh()

    def _print(self, result: StageResult) -> None:
        style = _STYLE[result.outcome]
        size = human_size(result.output_size) if result.output_size else ""
        seconds = f"{result.seconds:.1f} s" if result.outcome in ("built", "failed") else ""
        peak = f"  peak {human_size(result.peak_rss_bytes)}" if result.peak_rss_bytes else ""
        where = f"  on {escape(result.node)}" if result.node else ""
        self.console.print(
            f"[{style}]{result.outcome:>7}[/] {escape(f'{result.stage_id:<{self.id_width}}')} "
            f"{result.stage_type:<12} {seconds:>8} {size:>9}[dim]{peak}{where}[/]"
        )
        for warning in result.warnings:
            self.console.print(f"        [yellow]warning[/]: {escape(warning)}", soft_wrap=True)
        if result.message and result.outcome != "failed":  # failures are repeated in the summary
            self.console.print(f"        [dim]{escape(result.message)}[/]", soft_wrap=True)

    def _refresh(self) -> None:
        self._stop()
        if self._running:
            self._status = self.console.status("running " + ", ".join(self._running.values()))
            self._status.start()

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def done_line(built: int, cached: int, target: object) -> str:
    """The last line of ``edgepipe run`` (markup)."""
    return f"[green]done[/]: {built} built, {cached} cached → {target}"


def plan_rows(plans: Iterable[StagePlan]) -> list[dict]:
    """``edgepipe plan --json``: per stage, its status, why and its action key."""
    return [
        {
            "stage": p.stage_id,
            "type": p.stage_type,
            "status": p.status,
            "reasons": p.reasons,
            "key": p.key,
        }
        for p in plans
    ]


def plan_table(plans: Iterable[StagePlan]) -> Table:
    """``edgepipe plan``: per stage, cached or will run, and why."""
    table = Table("stage", "type", "status", "why", box=None, pad_edge=False)
    style = {"cached": "green", "run": "yellow", "blocked": "red"}
    for p in plans:
        label = "will run" if p.status == "run" else p.status
        table.add_row(
            p.stage_id, p.stage_type, f"[{style[p.status]}]{label}[/]", "; ".join(p.reasons)
        )
    return table


def stage_table(stage: Stage) -> Table:
    """The fields of one stage type, with their types, defaults and descriptions."""
    table = Table(
        "field",
        "type",
        "default",
        "description",
        title=f"[bold]{stage.type}[/]: {stage.summary}",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    for name, info in stage.spec_class.model_fields.items():
        if name == "type":
            continue
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation)
        annotation = annotation.replace("typing.", "").replace("pathlib.", "")
        default = (
            "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        )
        table.add_row(name, annotation, default, info.description or "")
    return table


def runtime_table(runtimes: Iterable) -> Table:
    """The runtimes artifacts are opened with, in the order they are asked, and their tools here."""
    from edgepipe.env import tool_versions

    table = Table("runtime", "opens", "devices", "tools (installed here)", "what", box=None)
    for runtime in runtimes:
        versions = tool_versions(runtime.tools)
        tools = ", ".join(
            f"{name} {version or '[red]missing[/]'}" for name, version in versions.items()
        )
        kinds, devices = ", ".join(runtime.kinds), ", ".join(runtime.devices)
        table.add_row(runtime.name, kinds, devices, tools, runtime.summary)
    return table


def action_table(records: Iterable) -> Table:
    table = Table("recipe", "stage", "type", "size", "built", "seconds", "key", box=None)
    for record in sorted(records, key=lambda r: (r.recipe, r.stage_id, r.created)):
        table.add_row(
            record.recipe,
            record.stage_id,
            record.stage_type,
            human_size(record.output_size),
            record.created,
            f"{record.seconds:.1f}",
            record.key[:12],
        )
    return table
