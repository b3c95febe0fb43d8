"""The no-op fast path: a fully cached ``edgepipe run`` answered before typer, rich, pydantic or
the recipe are imported.

A run whose every selected stage ended cached or built leaves ``<cache>/noop/<invocation>.json``
(:mod:`edgepipe.noop_record` says what it holds, and why that is enough): the signatures of what
the run read and of what it left, and what it would print. The same invocation (argv, working
folder, cache, environment, interpreter) checks them all (stat; the manifests and action records
are hashed) and, if nothing moved, prints that text and exits 0 — in a terminal with rich's
styles if the record was made in one, else as plain text. On any doubt it returns silently and
the full path runs. ``EDGEPIPE_NO_FAST_PATH=1`` turns it off.

Stdlib only, and nothing of edgepipe that imports pydantic. The ``edgepipe`` console script and
``python -m edgepipe`` (:mod:`edgepipe.__main__`) call :func:`serve` before importing the CLI.
"""

from __future__ import annotations

__all__ = ["DISABLE_VAR", "attempt", "invocation", "record_path", "serve"]

import contextlib
import hashlib
import json
import os
import sys
import time

from edgepipe.tmp_names import abandoned

FORMAT = 1
DISABLE_VAR = "EDGEPIPE_NO_FAST_PATH"
RACY_NS = 2_000_000_000
"""A file changed this close to the run's start may have changed again unseen (same tick)."""
STARTED_NS = time.time_ns()
"""Before edgepipe read anything: the entry point imports this module first."""
SYS_PATH = tuple(sys.path)
"""The import path as the process started: what its imports and metadata lookups used."""
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_VOLATILE_ENV = frozenset({"_", "OLDPWD", "SHLVL", "PYTEST_CURRENT_TEST", DISABLE_VAR})
_MULTI = {"--only": "only", "--until": "until", "--force": "force"}
_SINGLE = {"--out": "out", "--cache": "cache", "--remote": "remote", "--jobs": "jobs"}
_FLAGS = {"--check": ("check", True), "--lock": ("lock", True), "--no-lock": ("lock", False),
          "--in-process": ("in_process", True)}  # fmt: skip


def _digest(document: object) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def stat_signature(path: str, read: bool) -> list[int] | None:
    """What a file or folder is, without reading it; None when it does not exist.

    ``read``: something the full path reads, through links as it does, with its ctime (any
    write, chmod, rename or utime moves it). Otherwise something the full path creates (output
    files and folders, objects): a link in its place is a change, and no ctime, which moves
    whenever another output folder links an object (the stat cache's own contract).
    """
    try:
        st = os.stat(path) if read else os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    signature = [st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    return [*signature, st.st_ctime_ns] if read else signature


def listing_signature(path: str) -> str | None:
    """The names in a folder (a file added, removed or renamed inside moves it)."""
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()


def content_signature(path: str) -> str | None:
    try:
        with open(path, "rb") as stream:
            return hashlib.sha256(stream.read()).hexdigest()
    except (FileNotFoundError, NotADirectoryError):
        return None


def invocation(recipe, cache_root: str, cwd: str, **options) -> dict:
    """What the record's name stands for: the run options that change what a run does or
    prints, normalised alike by the CLI (typer's values) and by :func:`parse_run` (argv)."""
    out, jobs = options.get("out"), options.get("jobs") or 1
    return {
        "format": FORMAT,
        "recipe": os.path.normpath(os.path.join(cwd, os.fspath(recipe))),
        "cache": cache_root,
        "cwd": cwd,
        **{name: list(options.get(name) or ()) for name in ("only", "until", "force")},
        "out": None if out is None else os.path.normpath(os.path.join(cwd, os.fspath(out))),
        "remote": options.get("remote") or None,
        "jobs": int(jobs),
        **{
            flag: bool(options.get(flag, flag == "lock"))
            for flag in ("check", "lock", "in_process")
        },
    }


def record_path(invoked: dict) -> str:
    return os.path.join(invoked["cache"], "noop", _digest(invoked) + ".json")


def context_digest(environ) -> str:
    """The environment and interpreter: a record made under others proves nothing."""
    env = sorted((k, v) for k, v in environ.items() if k not in _VOLATILE_ENV)
    return _digest([env, sys.executable, sys.version, SYS_PATH, PACKAGE_DIR, os.name])


def parse_run(argv: list[str]) -> tuple[str, dict] | None:
    """``run RECIPE [options]`` as typer would read it, or None for anything else or unsure."""
    if not argv or argv[0] != "run":
        return None
    recipe, options, seen, args = None, {}, set(), list(argv[1:])
    while args:
        arg = args.pop(0)
        if not arg.startswith("-"):
            if recipe is not None:
                return None
            recipe = arg
            continue
        name, eq, value = arg.partition("=")
        if arg.startswith("-j") and not arg.startswith("--"):  # -j N or -jN (click: -j=2 is "=2")
            name, eq, value = "--jobs", arg[2:], arg[2:]
        if name in _FLAGS and not eq and _FLAGS[name][0] not in seen:
            field, flag = _FLAGS[name]
            options[field] = flag
        elif name in _MULTI or (name in _SINGLE and _SINGLE[name] not in seen):
            if not eq:
                if not args:
                    return None
                value = args.pop(0)
            if not value or value.startswith("-"):
                return None
            field = _MULTI.get(name) or _SINGLE[name]
            if field == "jobs" and not (value.isdigit() and value.isascii() and int(value) > 0):
                return None
            if name in _MULTI:
                options.setdefault(field, []).append(value)
            else:
                options[field] = value
        else:
            return None  # an option this parser does not know, or one given twice
        seen.add(field)
    return (recipe, options) if recipe else None


def cache_root(given: str | None, environ, cwd: str) -> str | None:
    """Cache(): --cache, else $EDGEPIPE_CACHE, else platformdirs' user cache dir (Linux only)."""
    chosen = given or environ.get("EDGEPIPE_CACHE")
    if not chosen:
        if not sys.platform.startswith("linux"):
            return None
        base = environ.get("XDG_CACHE_HOME", "")
        chosen = os.path.join(base if base.strip() else os.path.expanduser("~/.cache"), "edgepipe")
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(chosen)))


def console_width(environ, fd: int = 2) -> int:
    """The width rich gives edgepipe's stderr console (rich.console.Console.size)."""
    columns = environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    if _rich_terminal(environ, fd) and environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return 80
    for std in (0, 1, 2):
        try:
            return os.get_terminal_size(std).columns or 80
        except (AttributeError, ValueError, OSError):
            pass
    return 80


def _rich_terminal(environ, fd: int) -> bool:
    forced = environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    if "FORCE_COLOR" in environ:
        return environ["FORCE_COLOR"] != ""
    return os.isatty(fd)


def _holds_abandoned(folder: str, marker: str) -> bool:
    """Whether the full path's reclaim_abandoned would remove something from ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(marker in name and abandoned(name) for name in names)


def sealed(body: dict) -> dict:
    """The record with a checksum of itself: a damaged record is never trusted."""
    return {**body, "seal": _digest(body)}


def _check(record: dict) -> str | None:
    checks = (
        ("inputs", lambda p: stat_signature(p, True)),
        ("outputs", lambda p: stat_signature(p, False)),
        ("listings", listing_signature),
        ("contents", content_signature),
    )
    for section, signature in checks:
        for path, expected in record[section]:
            if signature(path) != expected:
                return f"{section}: {path} changed"
    for folder, marker in record["clean"]:
        if _holds_abandoned(folder, marker):
            return f"{folder} holds what a killed run left"
    return None


def attempt(argv: list[str], environ, cwd: str, fd: int = 2) -> tuple[str | None, str]:
    """(what to print, "served") when the record proves this run fully cached, else (None, why
    not). Touches the action records' mtimes (gc's last use), as the full path does."""
    if environ.get(DISABLE_VAR, "") not in ("", "0"):
        return None, f"{DISABLE_VAR} is set"
    parsed = parse_run(argv)
    if parsed is None or os.name != "posix":
        return None, "not a run this fast path understands"
    recipe, options = parsed
    if options.get("force"):
        return None, "--force"
    root = cache_root(options.pop("cache", None), environ, cwd)
    if root is None:
        return None, "no cache folder"
    options["remote"] = options.get("remote") or environ.get("EDGEPIPE_REMOTE")
    invoked = invocation(recipe, root, cwd, **options)
    try:
        with open(record_path(invoked), "rb") as stream:
            record = json.load(stream)
        body = {k: v for k, v in record.items() if k != "seal"}
        if record["seal"] != _digest(body) or record["invocation"] != invoked:
            return None, "damaged record"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, "no record"
    if record["context"] != context_digest(environ):
        return None, "another environment or interpreter"
    text = record["text"]  # rich's plain text, as in a file or a pipe
    if _rich_terminal(environ, fd):  # its styles, if the record was made where rich used them
        if record["terminal_text"] is not None:
            text = record["terminal_text"]
        elif not os.isatty(fd):
            return None, "colour forced into a file"
    if record["width"] != console_width(environ, fd):
        return None, "another console width"
    why = _check(record)
    if why:
        return None, why
    for path in record["touch"]:
        with contextlib.suppress(OSError):
            os.utime(path)
    return text, "served"


def serve(argv: list[str]) -> None:
    """Print and exit 0 if the record proves the run cached; return in every other case."""
    written = 0
    try:
        text, _ = attempt(argv, os.environ, os.getcwd())
        if text is None:
            return
        data = text.encode("utf-8", "replace")
        while written < len(data):
            written += os.write(2, data[written:])
    except KeyboardInterrupt:  # as cli.main says it
        os.write(2, b"interrupted\n")
        sys.exit(130)
    except Exception:  # any doubt before a byte is out: the full path decides
        if written:
            raise SystemExit(f"edgepipe: writing to stderr failed after {written} bytes") from None
        return
    sys.exit(0)


PATH_LISTINGS = {
    path: listing_signature(path) for path in (os.path.abspath(e or os.curdir) for e in SYS_PATH)
}
"""The Python path's folders as the process started: a run must end with the same ones."""
