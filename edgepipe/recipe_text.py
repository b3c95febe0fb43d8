"""Text a recipe must not contain, found with its place before anything else reads it.

YAML refuses raw control characters in the file, but a double-quoted string makes them from
escapes (``"\\0"``, ``"\\a"``, ``"\\e[2J"``, ``"\\x07"``): a NUL then cuts a path short in the
C library, and an escape sequence repaints the terminal of whoever reads an error message or a
log. A file in another encoding (UTF-16 saved by a Windows editor, with or without its
byte-order mark) is named as such rather than as "a control character #x0000".
"""

from __future__ import annotations

__all__ = ["check_control_characters", "encoding_problem"]

import codecs
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.errors import RecipeError, RecipeIssue

if TYPE_CHECKING:  # yaml_lines imports recipe_limits, which imports this module
    from edgepipe.yaml_lines import LineMap

# C0 controls but tab, newline and carriage return; DEL; C1 controls
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_LISTED = 20  # issues listed; a recipe full of them needs one fix, not a thousand lines
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def encoding_problem(data: bytes) -> str | None:
    """What the bytes of a recipe look like when they are UTF-16 or UTF-32, not UTF-8."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"the file is {name} text (it starts with a byte-order mark); save it as UTF-8"
    sample = data[:512]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    for name, width, offset in (
        ("UTF-32 little-endian", 4, 0),
        ("UTF-32 big-endian", 4, 3),
        ("UTF-16 little-endian", 2, 0),
        ("UTF-16 big-endian", 2, 1),
    ):
        units = [sample[i : i + width] for i in range(0, len(sample) - width + 1, width)]
        ascii_like = [u for u in units if u[offset] and not any(u[:offset] + u[offset + 1 :])]
        if len(ascii_like) >= 0.9 * len(units):
            return (
                f"the file looks like {name} text without a byte-order mark (0 bytes between "
                "the characters); save it as UTF-8"
            )
    return None


def check_control_characters(data: Any, lines: LineMap, path: Path | None) -> None:
    """Refuse a control character in any key or text value, naming its field and line."""
    issues: list[RecipeIssue] = []
    _walk(data, (), lines, issues)
    if issues:
        raise RecipeError(path, issues[:_MAX_LISTED])


def _walk(value: Any, where: tuple, lines: LineMap, issues: list[RecipeIssue]) -> None:
    if len(issues) > _MAX_LISTED:
        return
    if isinstance(value, str):
        _check(value, where, lines, issues)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _check(key, (*where, key), lines, issues, key=True):
                continue  # what is under it would be reported under a key that is unreadable
            _walk(item, (*where, key), lines, issues)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, (*where, index), lines, issues)


def _check(text: str, where: tuple, lines: LineMap, issues: list, key: bool = False) -> bool:
    """Whether ``text`` (the value, or the last key, at ``where``) has a control character;
    if so, an issue says which and where."""
    found = _CONTROL.search(text)
    if found is None:
        return False
    char = found.group()
    name = unicodedata.name(char, "") or _NAMES.get(ord(char), "control character")
    what = "a key" if key else "the text"
    message = (
        f"{what} contains the control character U+{ord(char):04X} ({name}) at character "
        f"{found.start() + 1}: remove it (in a double-quoted string, escapes such as \\0, \\a, "
        "\\e and \\x01 make them)"
    )
    named = where[:-1] if key else where  # a bad key is not repeated in the message
    stage, field = None, ".".join(str(p) for p in named) or None
    if len(named) >= 2 and named[0] == "stages":
        stage, field = str(named[1]), ".".join(str(p) for p in named[2:]) or None
    issues.append(RecipeIssue(message, lines.line_of(where), stage, field))
    return True


_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x1B: "ESC", 0x7F: "DEL"}
