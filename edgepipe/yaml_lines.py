"""YAML with ``safe_load`` semantics that also remembers the line of every mapping key.

Validation errors are reported as ``file:line``, so we keep a map from the key path
(``("stages", "onnx", "opset")``) to the 1-based line it was written on. Duplicate keys, which
``yaml.safe_load`` silently collapses, are reported instead of ignored.
"""

from __future__ import annotations

__all__ = ["DuplicateKeyError", "KeyNotScalarError", "LineMap", "load_with_lines"]

from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


class DuplicateKeyError(ValueError):
    """A mapping repeats a key (for example two stages with the same id)."""

    def __init__(self, path: KeyPath, key: str, line: int, first_line: int):
        self.path = path
        self.key = key
        self.line = line
        self.first_line = first_line
        super().__init__(f"duplicate key '{key}' (first defined on line {first_line})")


class KeyNotScalarError(ValueError):
    """A mapping key is itself a list or mapping (``? [a, b]``), which no recipe field is."""

    def __init__(self, line: int):
        self.line = line
        super().__init__("a mapping key must be a plain name, not a list or mapping")


class LineMap:
    """Key path → line number, with fallback to the closest enclosing key."""

    def __init__(self, lines: dict[KeyPath, int]):
        self._lines = lines
        self._prefixes = set(lines)
        self._aliases: dict[KeyPath, KeyPath] = {}

    def alias(self, made: KeyPath, written: KeyPath) -> None:
        """Report ``made`` (e.g. an expanded matrix stage) at the lines of ``written``."""
        self._aliases[tuple(made)] = tuple(written)

    def line_of(self, path: KeyPath) -> int | None:
        path = tuple(path)
        for made, written in self._aliases.items():
            if path[: len(made)] == made:
                path = written + path[len(made) :]
                break
        if path not in self._lines:  # a key parsed as int/bool is stored as its YAML text
            path = tuple(
                str(p) if (*path[:i], str(p)) in self._prefixes else p for i, p in enumerate(path)
            )
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), None)


def load_with_lines(text: str) -> tuple[Any, LineMap]:
    """Parse one YAML document; raises ``yaml.YAMLError`` or :class:`DuplicateKeyError`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap({})
        lines: dict[KeyPath, int] = {(): node.start_mark.line + 1}
        _walk(node, (), lines)
        return loader.construct_document(node), LineMap(lines)
    finally:
        loader.dispose()


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise KeyNotScalarError(key_node.start_mark.line + 1)
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(path, key, line, seen[key])
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines)
