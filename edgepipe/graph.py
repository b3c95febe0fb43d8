"""The recipe's stages as a networkx DAG: edges from ``input``/``inputs``, checked and ordered.

networkx is the graph engine: the stable order (``lexicographical_topological_sort``), the cycle
as an ordered path (``find_cycle``), ``--only``/``--until`` selection (``ancestors``) and the
nearest torch model upstream (``bfs_layers``) are its well-kept algorithms, not ones written and
maintained here. Its import is not free (~390 modules, 65-150 ms by machine): a fully cached run
avoids it by not building the graph (the cached-run fast path), not by avoiding networkx here.
"""

from __future__ import annotations

__all__ = ["PipelineGraph"]

from collections.abc import Iterable

import networkx as nx

from edgepipe.errors import GraphError, RecipeIssue
from edgepipe.recipe import Recipe, did_you_mean
from edgepipe.stages.base import ArtifactKind, Stage, StageSpec, get_stage

_TORCH = ArtifactKind.TORCH_MODEL
_REPORT = ArtifactKind.REPORT
_MAX_UNKNOWN_LISTED = 20  # unknown inputs listed one by one; the rest are counted


class PipelineGraph:
    """Validated DAG of a recipe's stages, in a stable topological order."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        # edges run upstream -> stage (data flow), a repeated input is one edge; nodes are added
        # in recipe order, so every networkx traversal below visits them deterministically
        self.dag = nx.DiGraph()
        self.dag.add_nodes_from(recipe.stages)
        self._position = {sid: i for i, sid in enumerate(recipe.stages)}
        issues = self._add_edges()
        issues += self._find_cycle()
        if not issues:
            issues += self._resolve_references()
        if not issues:
            issues += self._check_kinds()
        if issues:
            raise GraphError(recipe.path, issues)

    def spec(self, stage_id: str) -> StageSpec:
        return self.recipe.stages[stage_id]

    def stage(self, stage_id: str) -> Stage:
        return get_stage(self.spec(stage_id).type)

    def order(self, selected: Iterable[str] | None = None) -> list[str]:
        """Topological order; ties broken by position in the recipe so output is stable."""
        # among the stages whose inputs are all placed, the earliest in the recipe goes next
        recipe_position = self._position.__getitem__
        ordered = list(nx.lexicographical_topological_sort(self.dag, key=recipe_position))
        if selected is None:
            return ordered
        keep = set(selected)
        return [sid for sid in ordered if sid in keep]

    def independent_groups(self, selected: Iterable[str]) -> tuple[list[list[str]], list[str]]:
        """The selected stages split for fan-out: (groups, joins).

        A stage descends from one or more source stages (those without inputs). Stages that
        descend from a single source form that source's group; groups share no stage, so jobs
        that build one group each never build the same stage. A stage that joins several
        sources (a benchmark over every model) is left to a final job, with what follows it.
        """
        chosen = list(selected)
        sources: dict[str, set[str]] = {}
        for stage_id in self.order(chosen):
            ups = [up for up in self.dag.predecessors(stage_id) if up in sources]
            sources[stage_id] = set().union(*(sources[u] for u in ups)) if ups else {stage_id}
        groups: dict[str, list[str]] = {}
        joins = []
        for stage_id in self.order(chosen):
            if len(sources[stage_id]) == 1:
                groups.setdefault(next(iter(sources[stage_id])), []).append(stage_id)
            else:
                joins.append(stage_id)
        return list(groups.values()), joins

    def ancestors(self, stage_id: str) -> set[str]:
        return nx.ancestors(self.dag, stage_id)

    def descendants(self, stage_id: str) -> set[str]:
        return nx.descendants(self.dag, stage_id)

    def select(self, only: list[str] | None = None, until: list[str] | None = None) -> list[str]:
        """Stages to consider: ``only`` exactly those, ``until`` those plus their ancestors."""
        for stage_id in [*(only or []), *(until or [])]:
            if stage_id not in self.recipe.stages:
                hint = did_you_mean(stage_id, list(self.recipe.stages))
                raise GraphError(self.recipe.path, [RecipeIssue(f"no stage '{stage_id}'{hint}")])
        if not only and not until:
            return self.order()
        chosen = set(only or [])
        for stage_id in until or []:
            chosen |= {stage_id, *self.ancestors(stage_id)}
        return self.order(chosen)

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        for sid in self.order():
            lines.append(f'    {sid}["{sid}<br/><i>{self.spec(sid).type}</i>"]')
        lines += [f"    {a} --> {b}" for a, b in self._edges_in_order()]
        return "\n".join(lines)

    def dot(self) -> str:
        lines = [f'digraph "{self.recipe.name}" {{', "    rankdir=LR;"]
        for sid in self.order():
            lines.append(f'    "{sid}" [shape=box, label="{sid}\\n({self.spec(sid).type})"];')
        lines += [f'    "{a}" -> "{b}";' for a, b in self._edges_in_order()]
        return "\n".join([*lines, "}"])

    def _edges_in_order(self) -> list[tuple[str, str]]:
        return [(up, sid) for sid in self.order() for up in self.spec(sid).input_ids()]

    def _slot_line(self, stage_id: str, field: str, index: int | None) -> int | None:
        path = ("stages", stage_id, field) if index is None else ("stages", stage_id, field, index)
        return self.recipe.line_of(*path)

    def _add_edges(self) -> list[RecipeIssue]:
        issues, unknown, known = [], 0, list(self.recipe.stages)
        for stage_id, spec in self.recipe.stages.items():
            for field, index, upstream in spec.input_slots():
                if upstream in self.recipe.stages:
                    self.dag.add_edge(upstream, stage_id)
                    continue
                unknown += 1
                # a "did you mean" compares with every id: for each of thousands of unknown
                # inputs that would be quadratic, and nobody reads thousands of lines anyway
                if unknown <= _MAX_UNKNOWN_LISTED:
                    hint = did_you_mean(upstream, known)
                    line = self._slot_line(stage_id, field, index)
                    msg = f"unknown input stage '{upstream}'{hint}"
                    issues.append(RecipeIssue(msg, line, stage_id, field))
        if unknown > _MAX_UNKNOWN_LISTED:
            more = unknown - _MAX_UNKNOWN_LISTED
            msg = f"and {more:,} more unknown input stage(s): {unknown:,} in all"
            issues.append(RecipeIssue(msg))
        return issues

    def _resolve_references(self) -> list[RecipeIssue]:
        """Fill an omitted ``reference`` with the nearest torch-model ancestor of ``input``."""
        issues = []
        for stage_id in self.order():
            spec = self.spec(stage_id)
            if "reference" not in spec.input_fields or spec.reference is not None:
                continue
            found = self._nearest_torch_model(spec.input_ids()[0])
            if found is None:
                msg = (
                    "no torch model upstream of its input to compare against; "
                    "set `reference:` to a load or reparameterize stage"
                )
                issues.append(
                    RecipeIssue(msg, self.recipe.line_of("stages", stage_id), stage_id, "reference")
                )
                continue
            self.recipe.stages[stage_id] = spec.model_copy(update={"reference": found})
            self.dag.add_edge(found, stage_id)
        return issues

    def _nearest_torch_model(self, start: str) -> str | None:
        """Breadth-first up the inputs: the closest ancestor wins, a tie goes to the input named
        first (a stage's predecessors keep the order of its input slots: edges are added slot by
        slot, and a filled-in ``reference``, the last slot, after them)."""
        upstream_view = self.dag.reverse(copy=False)
        for layer in nx.bfs_layers(upstream_view, start):
            for stage_id in layer:
                if self.stage(stage_id).output_kind(self.spec(stage_id)) == _TORCH:
                    return stage_id
        return None

    def _find_cycle(self) -> list[RecipeIssue]:
        """One loop, as a path: the first that a depth-first search from the stages in recipe
        order meets (a recipe with several loops always reports the same one)."""
        try:
            edges = nx.find_cycle(self.dag)  # in data-flow order: [(b, c), (c, a), (a, b)]
        except nx.NetworkXNoCycle:
            return []
        loop = [upstream for upstream, _ in edges]
        start = min(range(len(loop)), key=lambda i: self._position[loop[i]])
        # from the earliest stage in the recipe, whichever stage the search entered the loop at
        path = [*loop[start:], *loop[:start], loop[start]]
        first = path[0]
        return [
            RecipeIssue(
                "the stages form a cycle: " + " → ".join(path),
                self.recipe.line_of("stages", first),
                first,
                None,
            )
        ]

    def _check_kinds(self) -> list[RecipeIssue]:
        issues = []
        for stage_id in self.order():
            stage, spec = self.stage(stage_id), self.spec(stage_id)
            found = len(issues)
            for field, index, upstream in spec.input_slots():
                produced = self.stage(upstream).output_kind(self.spec(upstream))
                accepted = stage.accepted_kinds(field, spec)
                if accepted and produced not in accepted:
                    wanted = " or ".join(k.value for k in accepted)
                    msg = (
                        f"{_a(repr(spec.type))} stage takes {_a(wanted)} as input, but "
                        f"'{upstream}' produces {_a(produced.value)}"
                    )
                    line = self._slot_line(stage_id, field, index)
                    issues.append(RecipeIssue(msg, line, stage_id, field))
            if len(issues) == found:  # each input is of a kind it takes: are they enough?
                issues += self._check_not_only_reports(stage_id)
        return issues

    def _check_not_only_reports(self, stage_id: str) -> list[RecipeIssue]:
        """A field that takes reports *beside* other kinds (a benchmark's parity verdicts) uses
        them to annotate those artifacts: reports alone leave it nothing to work on."""
        stage, spec = self.stage(stage_id), self.spec(stage_id)
        issues = []
        for field in spec.input_fields:
            accepted = stage.accepted_kinds(field, spec)
            upstreams = [up for name, _, up in spec.input_slots() if name == field]
            if _REPORT not in accepted or len(accepted) < 2 or not upstreams:
                continue
            if all(self.stage(up).output_kind(self.spec(up)) == _REPORT for up in upstreams):
                wanted = " or ".join(k.value for k in accepted if k != _REPORT)
                names = ", ".join(f"'{up}'" for up in upstreams)
                verb = "produces" if len(upstreams) == 1 else "produce"
                msg = (
                    f"{_a(repr(spec.type))} stage needs {_a(wanted)} among its {field}: {names} "
                    f"{verb} only reports, which annotate the other inputs but are not run"
                )
                line = self.recipe.line_of("stages", stage_id, field)
                issues.append(RecipeIssue(msg, line, stage_id, field))
        return issues


def _a(noun: str) -> str:
    return f"an {noun}" if noun.lstrip("'")[:1] in "aeiou" else f"a {noun}"
