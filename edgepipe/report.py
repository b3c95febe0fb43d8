"""``edgepipe report``: the latest verdicts and measurements of a recipe, as Markdown.

Which stages report and what they say is each stage type's business (``Stage.reports``,
``report_row``, ``report_section``); this module only lays the parts out.
"""

from __future__ import annotations

__all__ = ["recipe_report"]

from pathlib import Path


def recipe_report(graph, cache) -> str:
    """Markdown of the latest verification and benchmark results of a recipe, from the cache
    (nothing is run): a table of checks, then each stage's own section."""
    from edgepipe.planner import Planner

    sections, checks = [], []
    for plan in Planner(graph, cache).plan(graph.order()):
        stage = graph.stage(plan.stage_id)
        if not stage.reports:
            continue
        if plan.status != "cached":
            checks.append(f"| {plan.stage_id} | {plan.stage_type} | not built | |")
            continue
        files = _tree_files(cache, plan.record.output_digest)
        row = stage.report_row(plan.stage_id, files)
        section = stage.report_section(plan.stage_id, files)
        checks += [row] if row else []
        sections += [section] if section else []
    head = "| check | type | result | detail |\n|---|---|---|---|"
    parts = [f"## {graph.recipe.name}"]
    if checks:
        parts.append(head + "\n" + "\n".join(checks))
    return "\n\n".join(parts + sections) + "\n"


def _tree_files(cache, digest: str) -> dict[str, Path]:
    return {entry.path: cache.object_path(entry.digest) for entry in cache.read_manifest(digest)}
