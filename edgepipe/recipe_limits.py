"""A recipe is untrusted input (CI validates and runs the recipes in a pull request), so every
way it could make edgepipe hang, eat memory or crash has a bound here, well above what a real
recipe needs, and each bound is reported as an ordinary recipe error.
"""

from __future__ import annotations

__all__ = [
    "MAX_EXPANDED_ID_LENGTH",
    "MAX_EXPANDED_STAGES",
    "MAX_ID_LENGTH",
    "MAX_MATRIX_VALUES",
    "MAX_NESTING",
    "MAX_RECIPE_BYTES",
    "MAX_YAML_NODES",
    "read_recipe_text",
    "file_kind",
    "special_file_kind",
    "too_big_message",
]

import os
import stat
from pathlib import Path

from edgepipe.errors import RecipeError, RecipeIssue
from edgepipe.recipe_text import encoding_problem

MAX_RECIPE_BYTES = 1024 * 1024
"""The shipped recipes are 1-5 KiB; a megabyte is a mistake (or /dev/zero)."""
MAX_NESTING = 50
"""Deepest list/mapping nesting, aliases followed; real recipes nest 5 deep. Parsing, checking
and validating all recurse, so the bound keeps them far from Python's recursion limit."""
MAX_YAML_NODES = 100_000
"""Values in the recipe once aliases are expanded: bounds 'billion laughs' (a few lines of
nested aliases that expand to 10**9 values); the shipped recipes have a few hundred."""
MAX_ID_LENGTH = 100
"""Stage ids and the recipe name become folder and file names (build/<name>/<id>/,
<id>.error.log, <id>-<pid>-<16 hex digits>.tmp), which most file systems cap at 255 bytes."""
MAX_EXPANDED_ID_LENGTH = 200
"""A matrix cell's id, ``id[value,value]``: the same file names, with room left for the
suffixes edgepipe adds."""
MAX_MATRIX_VALUES = 100
"""Values on one matrix axis."""
MAX_EXPANDED_STAGES = 1_000
"""Stages after matrix expansion: each one is validated, planned and cached on its own, so a
product of axes in the hundreds of thousands would hang validation long before a run."""


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file, refusing anything that is not a small regular file.

    The file is opened non-blocking and checked with ``fstat`` before any read: opening a FIFO
    for a normal read waits for a writer forever, and a device such as /dev/zero never ends.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RecipeError(path, [RecipeIssue("file not found")]) from None
    except OSError as exc:
        raise RecipeError(path, [RecipeIssue(f"cannot read: {exc.strerror or exc}")]) from None
    try:
        data = _read_regular_file(fd, path)
    finally:
        os.close(fd)
    if problem := encoding_problem(data):
        raise RecipeError(path, [RecipeIssue(problem, line=1)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        msg = f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8"
        raise RecipeError(path, [RecipeIssue(msg, line=line)]) from None


def _read_regular_file(fd: int, path: Path) -> bytes:
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise RecipeError(path, [RecipeIssue("is a directory, not a recipe file")])
    if not stat.S_ISREG(mode):
        msg = f"is a {file_kind(mode)}, not a regular file; a recipe must be a regular file"
        raise RecipeError(path, [RecipeIssue(msg)])
    chunks, size = [], 0
    while size <= MAX_RECIPE_BYTES:  # read one byte past the bound: the file may be growing
        try:
            chunk = os.read(fd, MAX_RECIPE_BYTES + 1 - size)
        except OSError as exc:
            raise RecipeError(path, [RecipeIssue(f"cannot read: {exc.strerror}")]) from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(path, [RecipeIssue(too_big_message())])
    return b"".join(chunks)


def too_big_message() -> str:
    return (
        f"the file is larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a few KiB of "
        "YAML (large data belongs in files the recipe names)"
    )


def special_file_kind(path: Path) -> str | None:
    """What ``path`` (symlinks followed) is when it exists and is not a regular file or a
    folder: "named pipe (FIFO)", "character device"…; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else file_kind(mode)


def file_kind(mode: int) -> str:
    """A file's kind in words, from its ``st_mode``: "named pipe (FIFO)", "regular file"…"""
    kinds = {
        stat.S_ISREG: "regular file",
        stat.S_ISFIFO: "named pipe (FIFO)",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISSOCK: "socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")
