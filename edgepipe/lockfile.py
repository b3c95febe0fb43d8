"""The lockfile: what a full run produced, committed beside the recipe and reviewed in PRs.

``<recipe>.lock`` (YAML, stable order) records per stage its action key, key document, output
digest and size (none for an output no rebuild reproduces, ``Stage.not_reproducible``), and its
verdict or choices (``Stage.headline``): only what a rebuild reproduces. Measured numbers go to
the metrics file (:mod:`edgepipe.metrics`). ``edgepipe check`` recomputes every key *without
running or needing a cache* (upstream outputs are taken from the lock while keys match) and
explains each difference: the CI drift gate.
"""

from __future__ import annotations

__all__ = [
    "check_lock",
    "lock_path",
    "read_lock",
    "recipe_lock",
    "recorded_settings",
    "write_lock",
]

from pathlib import Path
from typing import Any

import yaml

from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.key_documents import explain
from edgepipe.stages.base import get_stage

LOCK_VERSION = 1
_HEADER = (
    "# edgepipe lockfile — written by `edgepipe run`, checked by `edgepipe check`. Do not edit.\n"
)


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


def recipe_lock(graph, planner, out_dir: Path) -> dict[str, Any]:
    """The lock of a fully built recipe (every stage must be cached).

    An output no rebuild reproduces (``Stage.not_reproducible_for``: a verification's measured
    floats) is recorded without its digest; a stage fed by one, and a measurement (a benchmark:
    its key names the machine and the threads), without key or digest.
    """
    known: dict[str, str] = {}
    unreproduced: set[str] = set()
    stages: dict[str, Any] = {}
    for stage_id in graph.order():
        plan = planner.lookup(stage_id, known)
        record = plan.record
        known[stage_id] = record.output_digest
        stage, spec = get_stage(plan.stage_type), graph.spec(stage_id)
        fed_by = next((up for up in spec.input_ids() if up in unreproduced), None)
        why = stage.not_reproducible_for(spec)
        if fed_by is not None or stage.measures_time:
            # a measurement's key names the machine and how it measured (threads, windows):
            # neither is what a rebuild reproduces, so a benchmark is recorded by its verdicts
            if fed_by is not None:
                why = f"fed by '{fed_by}', whose bytes no rebuild reproduces"
            entry = {"type": plan.stage_type, "output": {"reproducible": False, "why": why}}
        else:
            output = (
                {"digest": record.output_digest, "size": record.output_size}
                if why is None
                else {"reproducible": False, "why": why}
            )
            entry = {
                "type": plan.stage_type,
                "key": record.key,
                "output": output,
                "key_document": plan.key_document,
            }
        if why is not None:
            unreproduced.add(stage_id)
        entry.update(_headline(plan.stage_type, out_dir / stage_id))
        stages[stage_id] = entry
    return {"lock_version": LOCK_VERSION, "recipe": graph.recipe.name, "stages": stages}


def _headline(stage_type: str, folder: Path) -> dict[str, Any]:
    """The stage's own numbers for a PR diff (``Stage.headline``), read from its output."""
    files = (
        {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        if folder.is_dir()
        else {}
    )
    return get_stage(stage_type).headline(files)


def write_lock(path: Path, lock: dict[str, Any]) -> None:
    text = _HEADER + yaml.safe_dump(lock, sort_keys=False, width=100, allow_unicode=True)
    tmp = path.with_suffix(".lock.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_lock(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(
            path,
            [
                RecipeIssue(
                    "no lockfile: run `edgepipe run` on the recipe and commit the .lock it writes"
                )
            ],
        )
    try:
        lock = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(path, [RecipeIssue(f"unreadable lockfile: {exc}")]) from None
    if not isinstance(lock, dict) or lock.get("lock_version") != LOCK_VERSION:
        raise RecipeError(path, [RecipeIssue("not an edgepipe lockfile of this version")])
    problems = _shape_problems(lock)
    if problems:
        fix = "; rewrite it with a full `edgepipe run` of the recipe"
        raise RecipeError(path, [RecipeIssue(problem + fix) for problem in problems[:5]])
    return lock


def _shape_problems(lock: dict[str, Any]) -> list[str]:
    """What in a lock of the right version is not shaped as ``recipe_lock`` writes it (a
    hand-edited or damaged file): one readable line each instead of a crash in ``check``."""
    stages = lock.get("stages")
    if not isinstance(stages, dict):
        return [f"'stages' is {type(stages).__name__}, not a mapping of stage ids"]
    problems = []
    for stage_id, entry in stages.items():
        where = f"stage '{stage_id}'"
        if not isinstance(entry, dict):
            problems.append(f"{where} is {type(entry).__name__}, not a mapping")
        elif not isinstance(entry.get("type"), str):
            problems.append(f"{where} has no stage type")
        elif not isinstance(entry.get("output"), dict):
            problems.append(f"{where} has no output mapping")
        elif "key" in entry and not isinstance(entry["key"], str):
            problems.append(f"{where}: its key is not a string")
        elif "key" in entry and not isinstance(entry.get("key_document"), dict):
            problems.append(f"{where}: its key document is missing")
        elif "key" in entry and "digest" not in entry["output"] and not _unreproduced(entry):
            problems.append(f"{where}: its output has no digest")
    return problems


def recorded_settings(recipe_path: Path) -> dict[str, dict[str, Any]]:
    """Per stage id, what the committed lock recorded that a rebuild should reproduce (the
    quantization settings a search chose), with the action key it was recorded under."""
    path = lock_path(recipe_path)
    try:
        lock = read_lock(path)
    except RecipeError:  # no lock, or not ours: nothing to reproduce
        return {}
    recorded = {}
    for stage_id, entry in (lock.get("stages") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("quantization"), dict):
            recorded[stage_id] = {"key": entry.get("key"), **entry["quantization"]}
    return recorded


def _same_but_machine(document: dict[str, Any], locked: dict[str, Any] | None) -> bool:
    """Benchmarks and engine builds are keyed by the machine too; running them on another
    machine is not drift in the recipe, its inputs or the toolchain."""
    if locked is None:
        return False
    return {k: v for k, v in document.items() if k != "extra"} == {
        k: v for k, v in locked.items() if k != "extra"
    }


def _unreproduced(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("output", {}).get("reproducible") is False


def check_lock(graph, planner, lock: dict[str, Any]) -> list[str]:
    """Every difference between the recipe + inputs + toolchain now and the lock, readably."""
    locked = lock.get("stages", {})
    known: dict[str, str] = {}
    differences = []
    for stage_id in graph.order():
        spec = graph.spec(stage_id)
        entry = locked.get(stage_id)
        if entry is None:
            differences.append(f"stage '{stage_id}': new (not in the lock)")
            continue
        changed = [up for up in spec.input_ids() if up not in known]
        if any(_unreproduced(locked.get(up)) for up in changed):
            continue  # fed by an output no rebuild reproduces (a benchmark's): nothing to check
        if changed:
            differences.append(f"stage '{stage_id}': input '{changed[0]}' changed")
            continue
        if "key" not in entry:
            continue  # a measurement (benchmark): recorded by its verdicts, nothing to recompute
        key, document = planner.key_for(stage_id, [known[up] for up in spec.input_ids()])
        if key == entry["key"] or _same_but_machine(document, entry.get("key_document")):
            if "digest" in entry["output"]:  # else below it nothing can be checked: skipped
                known[stage_id] = entry["output"]["digest"]
            continue
        reasons = explain(entry.get("key_document"), document, spec.input_ids())
        differences += [f"stage '{stage_id}': {reason}" for reason in reasons]
    differences += [
        f"stage '{sid}': removed from the recipe"
        for sid in locked
        if sid not in graph.recipe.stages
    ]
    return differences
