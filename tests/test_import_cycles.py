"""No import cycles among edgepipe's modules, counting imports written inside functions.

A cycle hidden in a function body still couples two modules both ways; it only moves the
failure from import time to the first call. The graph is read from the source (AST), so the
test needs no heavy library and sees every import, wherever it is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "edgepipe"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The edgepipe modules ``path`` imports (``from pkg import name`` counts ``pkg.name`` if
    that is a module, else ``pkg``); imports under ``if TYPE_CHECKING:`` do not run."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            }
    return {name for name in found if name in modules and name != this}


def import_graph() -> nx.DiGraph:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for path in paths:
        graph.add_edges_from(
            (module_name(path), target) for target in imported_modules(path, modules)
        )
    return graph


def test_the_import_graph_is_read():
    graph = import_graph()
    assert ("edgepipe.runner", "edgepipe.planner") in graph.edges
    assert ("edgepipe.cli", "edgepipe.runner") in graph.edges  # imported inside a function
    assert graph.number_of_edges() > 100


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], "\n".join(" → ".join([*cycle, cycle[0]]) for cycle in cycles)
