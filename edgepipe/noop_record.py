"""Write the record that lets the next identical ``edgepipe run`` take the no-op fast path
(:mod:`edgepipe.noop_run`, which reads it). The CLI's run command makes a :class:`NoopRecorder`
before the runner reads anything and calls :meth:`NoopRecorder.finish` after a successful run.

What the record lists, and why each is enough:

- what the full path reads to decide "all cached" (``inputs``: stat with ctime): the recipe,
  every key file and every file of every key folder, the lockfile it reads, edgepipe's own files,
  the ``.pth`` files and the tools' ``METADATA``. A file whose ctime is this close to (or after)
  the start of the run may have changed while the run read it: then no record is written.
- folders whose names decide what is read (``listings``): the recipe's folder, key folders and
  their sub-folders, the folders of key files (a module source added beside them), the Python
  path's folders (a package installed or removed), the tools' dist-info folders and edgepipe's
  package folders. The run's folders are listed when it starts, the Python path's when the
  process starts; each must be the same at the end.
- what the run left (``outputs``: stat without ctime, the stat cache's contract for objects):
  each output folder's files and sub-folders, which must be exactly the stored tree, the
  objects behind them, the cache index the run rewrites, the lockfile it writes; the manifests
  and action records are small and hashed (``contents``).
- recipes whose keys hold machine facts (``key_extra``: benchmarks, TensorRT engines) get no
  record: the fast path would have to measure the machine.
"""

from __future__ import annotations

__all__ = ["NoopRecorder"]

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgepipe import noop_run
from edgepipe.lockfile import lock_path
from edgepipe.planner import index_name

log = logging.getLogger(__name__)


class NoopRecorder:
    """Collects what a run's no-op record needs; never fails the run."""

    def __init__(self, started_ns: int, recipe: Path, graph, selected: list[str], cache, **options):
        self.started_ns = started_ns
        self.recipe = os.path.abspath(recipe)
        self.graph = graph
        self.selected = list(selected)
        self.cache = cache
        self.options = options
        self._start_listings = None
        try:
            self.invoked = noop_run.invocation(recipe, str(cache.root), os.getcwd(), **options)
            self.context = noop_run.context_digest(os.environ)
            self._start_listings = self._listings(self._run_folders())
        except Exception as exc:  # e.g. a key file that does not exist: the run will say so
            log.debug("no no-op record for this run: %s", exc)

    def finish(self, runner, result, *, target: Path, console, id_width: int) -> None:
        """Write the record if every selected stage is now cached and nothing moved meanwhile;
        ``console`` is the one the run printed on (its width and colours)."""
        try:
            why = self._write(runner, result, target, console, id_width)
        except Exception as exc:  # the run succeeded; only the next one is slower
            why = f"{type(exc).__name__}: {exc}"
        if why:
            log.debug("no no-op record for this run: %s", why)

    def _needed(self) -> list[str]:
        needed = set(self.selected)
        for stage_id in self.selected:
            needed |= self.graph.ancestors(stage_id)
        return self.graph.order(needed)

    def _key_paths(self) -> list[Path]:
        base = self.graph.recipe.base_dir
        return [
            Path(os.path.abspath(path))
            for stage_id in self._needed()
            for path in self.graph.stage(stage_id)
            .key_files(self.graph.spec(stage_id), base)
            .values()
        ]

    def _run_folders(self) -> list[str]:
        folders = {os.path.dirname(self.recipe)}
        for path in self._key_paths():
            folders.add(str(path.parent))
            if path.is_dir():
                folders |= {str(path)} | {str(p) for p in path.rglob("*") if p.is_dir()}
        return sorted(folders)

    def _run_files(self) -> list[str]:
        files = {self.recipe}
        for path in self._key_paths():
            if path.is_dir():
                files |= {str(p) for p in path.rglob("*") if not p.is_dir()}
            else:
                files.add(str(path))
        return sorted(files)

    @staticmethod
    def _listings(folders: list[str]) -> list[list[Any]]:
        return [[folder, noop_run.listing_signature(folder)] for folder in folders]

    def _write(self, runner, result, target: Path, console, id_width: int) -> str | None:
        if self._start_listings is None:
            return "the run's inputs could not be listed when it started"
        if self.options.get("force"):
            return "--force rebuilds whatever the record says"
        if any(r.outcome not in ("built", "cached") for r in result.stages):
            return "a stage neither built nor cached"
        plans, known = [], {}
        for stage_id in self._needed():
            plan = runner.planner.lookup(stage_id, known)
            if plan.record is None:
                return f"stage '{stage_id}' is not cached after the run"
            if plan.key_document.get("extra"):
                return f"stage '{stage_id}' is keyed by facts about this machine"
            known[stage_id] = plan.record.output_digest
            plans.append(plan)
        if self._listings(self._run_folders()) != self._start_listings:
            return "a folder the run read changed while it ran"
        lock = runner.lock_file is not None and set(self.selected) == set(self.graph.order())
        lock_file = str(lock_path(Path(self.recipe)))
        inputs = [[p, noop_run.stat_signature(p, True)] for p in self._run_files()]
        if not lock:
            inputs.append([lock_file, noop_run.stat_signature(lock_file, True)])
        env_inputs, env_folders, path_folders = _environment(plans)
        path_listings = self._listings(path_folders)
        if any(noop_run.PATH_LISTINGS.get(p) != listing for p, listing in path_listings):
            return "a folder of the Python path changed since the process started"
        # the lockfile's folder is exempt: the run itself writes the lockfile there
        run_folders = [
            [p, noop_run.stat_signature(p, True)]
            for p, _ in self._start_listings
            if p != os.path.dirname(self.recipe)
        ]
        for (path, signature), since in [(i, self.started_ns) for i in inputs + run_folders] + [
            (i, noop_run.STARTED_NS) for i in env_inputs + env_folders
        ]:
            if signature is not None and signature[-1] >= since - noop_run.RACY_NS:
                return f"{path} changed just before or while the run read it"
        outputs, contents, listings = self._outputs(plans, runner)
        if outputs is None:
            return "an output folder is not exactly its stored tree"
        if lock:
            outputs.append([lock_file, noop_run.stat_signature(lock_file, False)])
        body = {
            "format": noop_run.FORMAT,
            "invocation": self.invoked,
            "context": self.context,
            "width": console.width,
            "text": _cached_text(result.stages, id_width, target, console.width, None),
            "terminal_text": _cached_text(
                result.stages, id_width, target, console.width, console.color_system
            )
            if console.is_terminal
            else None,
            "inputs": inputs + env_inputs,
            "outputs": outputs,
            "listings": self._start_listings
            + listings
            + [[p, noop_run.listing_signature(p)] for p, _ in env_folders]
            + path_listings,
            "contents": contents,
            "touch": [str(self.cache.action_path(p.key)) for p in plans],
            "clean": [[str(self.cache.tmp_dir), ""], [os.path.abspath(runner.out_dir), "."]],
        }
        self._store(json.dumps(noop_run.sealed(body), indent=0).encode())
        return None

    def _outputs(self, plans, runner) -> tuple[list | None, list, list]:
        outputs, contents, listings = [], [], []
        chosen = set(self.selected)
        for plan in plans:
            digest = plan.record.output_digest
            entries = self.cache.read_manifest(digest)
            folder = Path(os.path.abspath(runner.out_dir)) / plan.stage_id
            found = [folder, *folder.rglob("*")]
            folders = [p for p in found if p.is_dir() and not p.is_symlink()]
            files = sorted(p for p in found if p not in folders)
            if [p.relative_to(folder).as_posix() for p in files] != [e.path for e in entries]:
                return None, [], []
            objects = [self.cache.object_path(e.digest) for e in entries]
            outputs += [[str(p), noop_run.stat_signature(str(p), False)] for p in found + objects]
            listings += [[str(p), noop_run.listing_signature(str(p))] for p in folders]
            contents.append([str(self.cache.object_path(digest)), digest])
            action = str(self.cache.action_path(plan.key))
            contents.append([action, noop_run.content_signature(action)])
            if plan.stage_id in chosen:  # the full path rewrites their index documents
                index = self.cache.index_dir / self.graph.recipe.name / index_name(plan.stage_id)
                path = f"{index}.json"
                outputs.append([path, noop_run.stat_signature(path, False)])
        return outputs, contents, listings

    def _store(self, data: bytes) -> None:
        self.cache.atomic_write(Path(noop_run.record_path(self.invoked)), data)


def _environment(plans) -> tuple[list[list[Any]], list[list[Any]], list[str]]:
    """edgepipe's own files, the Python path (and its .pth files) and the tools' metadata:
    files and folders, with their signatures, and the Python path's folders (which, unlike the
    others, a run may write into: the working folder under ``python -m``)."""
    files, folders, path_folders = [], set(), []
    for root, dirs, names in os.walk(noop_run.PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        folders.add(root)
        files += [os.path.join(root, name) for name in names]
    for path in noop_run.PATH_LISTINGS:
        if os.path.isdir(path):
            path_folders.append(path)
            files += [os.path.join(path, n) for n in os.listdir(path) if n.endswith(".pth")]
        else:
            files.append(path)
    tools = {name for p in plans for name, version in p.key_document["tools"].items() if version}
    for name in sorted(tools):
        found = dist_info_folder(name)
        if found is not None:
            folders.add(str(found))
            files.append(str(Path(found) / "METADATA"))
    return (
        [[p, noop_run.stat_signature(p, True)] for p in sorted(set(files))],
        [[p, noop_run.stat_signature(p, True)] for p in sorted(folders)],
        path_folders,
    )


def dist_info_folder(name: str) -> str | None:
    """The installed distribution's metadata folder, whose METADATA gives its version."""
    from importlib import metadata

    found = getattr(metadata.distribution(name), "_path", None)
    return None if found is None else str(found)


def _cached_text(stages, id_width: int, target: Path, width: int, colours: str | None) -> str:
    """What the full path prints (rendered by its own display) when every stage is cached: as
    plain text, or with rich's styles in the colour system ``colours``."""
    from rich.console import Console

    from edgepipe.cli_display import RunDisplay, done_line
    from edgepipe.run_results import StageResult

    console = Console(
        file=io.StringIO(),
        width=width,
        highlight=False,
        force_terminal=colours is not None,
        color_system=colours,
        force_jupyter=False,
        legacy_windows=False,
    )
    display = RunDisplay(console, id_width=id_width)
    for stage in stages:
        display.stage_finished(
            StageResult(stage.stage_id, stage.stage_type, "cached", output_size=stage.output_size)
        )
    console.print(done_line(0, len(stages), target))
    return console.file.getvalue()
