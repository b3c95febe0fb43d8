"""YAML with ``safe_load`` semantics that also remembers the line of every mapping key.

Validation errors are reported as ``file:line``, so we keep a map from the key path
(``("stages", "onnx", "opset")``) to the 1-based line it was written on. Duplicate keys, which
``yaml.safe_load`` silently collapses, are reported instead of ignored.

A recipe is untrusted input, and ``safe_load`` is only safe from running code: it still
recurses once per nesting level (a RecursionError for ``[[[[…]]]]``), builds self-containing
values from recursive aliases (``a: &x [*x]``), and shares aliased values that expand
exponentially when walked ("billion laughs"). Nesting is bounded while composing, and the
walk that records lines refuses cycles and counts every value it reaches through aliases,
all before any Python object is constructed.
"""

from __future__ import annotations

__all__ = [
    "DuplicateKeyError",
    "KeyNotScalarError",
    "LineMap",
    "YamlShapeError",
    "load_with_lines",
]

import re
from typing import Any

import yaml

from edgepipe.recipe_limits import MAX_NESTING, MAX_YAML_NODES

KeyPath = tuple[str | int, ...]


class DuplicateKeyError(ValueError):
    """A mapping repeats a key (for example two stages with the same id)."""

    def __init__(self, path: KeyPath, key: str, line: int, first_line: int):
        self.path = path
        self.key = key
        self.line = line
        self.first_line = first_line
        super().__init__(f"duplicate key '{key}' (first defined on line {first_line})")


class YamlShapeError(ValueError):
    """Well-formed YAML that no recipe can be: its message is the whole explanation."""

    def __init__(self, message: str, line: int | None):
        self.line = line
        super().__init__(message)


class KeyNotScalarError(YamlShapeError):
    """A mapping key is itself a list or mapping (``? [a, b]``), which no recipe field is."""

    def __init__(self, line: int):
        super().__init__("a mapping key must be a plain name, not a list or mapping", line)


class LineMap:
    """Key path → line number, with fallback to the closest enclosing key."""

    def __init__(self, lines: dict[KeyPath, int]):
        self._lines = lines
        self._prefixes = set(lines)
        self._aliases: dict[KeyPath, KeyPath] = {}

    def alias(self, made: KeyPath, written: KeyPath) -> None:
        """Report ``made`` (e.g. an expanded matrix stage) at the lines of ``written``."""
        self._aliases[tuple(made)] = tuple(written)

    def keys_under(self, path: KeyPath) -> list[str]:
        """The keys of the mapping at ``path`` as written in YAML, in order."""
        size = len(path) + 1
        return [str(p[-1]) for p in self._lines if len(p) == size and p[:-1] == tuple(path)]

    def line_of(self, path: KeyPath) -> int | None:
        path = tuple(path)
        # expanded matrix ids all start with a written one: look the prefix up, not every alias
        for size in range(len(path), 0, -1):
            written = self._aliases.get(path[:size])
            if written is not None:
                path = written + path[size:]
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
    """Parse one YAML document; raises ``yaml.YAMLError``, :class:`DuplicateKeyError` or
    :class:`YamlShapeError`."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap({})
        lines = _Walk(loader).lines_of(node)  # raises before construction builds anything
        return loader.construct_document(node), LineMap(lines)
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that bounds nesting and node count while composing, remembers anchor
    names for messages, and turns a value Python cannot build into a located error."""

    def __init__(self, text: str):
        super().__init__(text)
        self.anchor_names: dict[int, str] = {}  # id(node) → the anchor written on it
        # (id(list node), index) → line of an alias written as that item: the item *is* the
        # anchored node, whose own line is the anchor's
        self.alias_lines: dict[tuple[int, int], int] = {}
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if self._depth >= MAX_NESTING:  # refuse before PyYAML recurses any deeper
            raise YamlShapeError(nesting_message(), event.start_mark.line + 1)
        self._composed += 1
        if self._composed > MAX_YAML_NODES:
            msg = (
                f"the recipe has more than {MAX_YAML_NODES:,} values; a recipe has hundreds "
                "(large data belongs in files the recipe names)"
            )
            raise YamlShapeError(msg, event.start_mark.line + 1)
        anchor = None if isinstance(event, yaml.AliasEvent) else event.anchor
        if isinstance(event, yaml.AliasEvent) and isinstance(index, int):
            self.alias_lines[(id(parent), index)] = event.start_mark.line + 1
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if anchor is not None:
            self.anchor_names[id(node)] = anchor
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            value = super().construct_object(node, deep)
        except (YamlShapeError, yaml.YAMLError):
            raise
        except Exception as exc:
            # PyYAML's constructors trust that a scalar matches its tag's pattern, and fail
            # with whatever Python raises where it does not: 2024-13-45 read as a date, an
            # integer of more than 4300 digits, an explicit tag on the wrong text (!!bool maybe)
            raise YamlShapeError(_unreadable(node, exc), node.start_mark.line + 1) from None
        # 0x… reads as an integer of any size: no recipe value needs more than 64 bits, and
        # bigger ones break what consumes them (JSON keys, seeds, C libraries)
        if isinstance(value, int) and value.bit_length() > 64:
            msg = f"the integer is {value.bit_length()} bits long; at most 64 bits are allowed"
            raise YamlShapeError(msg, node.start_mark.line + 1)
        return value


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    text = node.value if isinstance(node, yaml.ScalarNode) else ""
    if tag == "!!int" and "digits" in str(exc):  # Python's guard against slow conversions
        return f"the integer has {len(text)} digits; at most 64 bits are allowed"
    shown = text if len(text) <= 40 else f"{text[:40]}…"
    reason = f" ({exc})" if isinstance(exc, ValueError) and str(exc) else ""
    return f"cannot read {shown!r} as {tag}{reason}; quote it if it is meant as text"


# PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: 1e-3 and 1.0e5 are
# strings there. Read them as numbers, as YAML 1.2 (and a reader of the recipe) does.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def nesting_message() -> str:
    return (
        f"lists and mappings are nested more than {MAX_NESTING} levels deep (aliases "
        "included); a recipe needs a few levels"
    )


class _Walk:
    """Records the line of every key and item, checking the recipe as it would be expanded.

    Iterative, with the nodes on the current path in ``on_path``: a node met again below
    itself is a recursive alias, however it is nested. A node met again elsewhere is an
    alias use; limits crossed below one are reported at the line of the first such use.
    """

    def __init__(self, loader: _BoundedLoader):
        self.anchor_names = loader.anchor_names
        self.alias_lines = loader.alias_lines
        self.lines: dict[KeyPath, int] = {}

    def lines_of(self, root: yaml.Node) -> dict[KeyPath, int]:
        self.lines[()] = root.start_mark.line + 1
        on_path: set[int] = set()
        met: set[int] = set()
        # node, its path, its depth, the line of the alias use it is under (or None), and
        # whether its children are done so that it leaves the path
        stack: list[tuple[yaml.Node, KeyPath, int, int | None, bool]] = [(root, (), 1, None, False)]
        reached = 0
        while stack:
            node, path, depth, alias_use, leaving = stack.pop()
            if leaving:
                on_path.discard(id(node))
                continue
            if id(node) in on_path:
                message = _recursive_alias_message(node, self.anchor_names)
                raise YamlShapeError(message, self.lines.get(path))
            if alias_use is None and id(node) in met:
                alias_use = self.lines.get(path)
            met.add(id(node))
            reached += 1
            if reached > MAX_YAML_NODES:
                raise YamlShapeError(_expansion_message(), alias_use or self.lines.get(path))
            if depth > MAX_NESTING:
                raise YamlShapeError(nesting_message(), alias_use or self.lines.get(path))
            if isinstance(node, yaml.ScalarNode):
                continue
            on_path.add(id(node))
            stack.append((node, path, depth, alias_use, True))
            children = self._children(node, path)
            stack.extend(
                (child, child_path, depth + 1, alias_use, False)
                for child_path, child in reversed(children)
            )
        return self.lines

    def _children(self, node: yaml.Node, path: KeyPath) -> list[tuple[KeyPath, yaml.Node]]:
        """(path, node) of a collection's values, recording their lines; checks the keys."""
        children = []
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
                self.lines[(*path, key)] = line
                children.append(((*path, key), value_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                line = self.alias_lines.get((id(node), index), item.start_mark.line + 1)
                self.lines[(*path, index)] = line
                children.append(((*path, index), item))
        return children


def _recursive_alias_message(node: yaml.Node, anchor_names: dict[int, str]) -> str:
    name = anchor_names.get(id(node), "?")
    return (
        f"the alias *{name} is used inside its own anchor &{name} (line "
        f"{node.start_mark.line + 1}), which would make an endlessly nested value; "
        "write the values out instead"
    )


def _expansion_message() -> str:
    return (
        f"alias expansion makes more than {MAX_YAML_NODES:,} values (each *alias repeats the "
        "whole value of its &anchor, so nested aliases multiply); use fewer, flatter aliases"
    )
