"""Find the source files of a Python module *without importing it*, for the cache key."""

from __future__ import annotations

__all__ = ["module_source_files"]

import importlib.machinery
import sys
from pathlib import Path


def module_source_files(module_name: str, recipe_dir: Path) -> list[Path]:
    """The ``.py`` files whose change should rebuild a model made by ``module_name``.

    A module in the user's tree (outside site-packages) is keyed by its package's sources, so an
    edit to a sibling layer file rebuilds. An installed package is keyed by its version instead
    (through the stage's tools), so nothing is returned for it.
    """
    top = module_name.split(".")[0]
    search = [str(recipe_dir), *sys.path]
    spec = importlib.machinery.PathFinder.find_spec(top, search)
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package: every source file (namespace ones too)
        folders = [Path(folder) for folder in spec.submodule_search_locations]
        files = [p for f in folders for p in f.rglob("*.py") if "__pycache__" not in p.parts]
    elif spec.origin:
        files = [Path(spec.origin)]
    else:
        return []
    return [] if any(_installed(f) for f in files) else sorted(files)


def _installed(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts)
