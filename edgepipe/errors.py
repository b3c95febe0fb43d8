"""The error tree: every failure a user can cause maps to one readable message and an exit code.

Anything that is *not* an :class:`EdgepipeError` reaching the CLI is a bug in edgepipe and is
reported with a traceback and exit code 70.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "DriftError",
    "EdgepipeError",
    "ExitCode",
    "GraphError",
    "PreflightError",
    "RecipeError",
    "RecipeIssue",
    "StageError",
    "StageFailure",
    "StageInterrupted",
    "ToolchainError",
    "UsageError",
    "summarize_exception",
]

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes; documented in the README."""

    OK = 0
    STAGE_FAILED = 1
    USAGE = 2  # click/typer's own code for bad command-line arguments
    RECIPE_INVALID = 3
    PREFLIGHT_FAILED = 4
    CACHE_CORRUPT = 5
    DRIFT = 6
    BUG = 70
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM (e.g. a CI runner cancelling the job)


def summarize_exception(exc: BaseException, limit: int = 400) -> str:
    """``Type: first line of the message``: a library error in one line for the user."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class EdgepipeError(Exception):
    """Base of every error edgepipe expects; its message is shown to the user as is."""

    exit_code: ExitCode = ExitCode.STAGE_FAILED


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe, located as precisely as we can."""

    message: str
    line: int | None = None
    stage_id: str | None = None
    field: str | None = None

    def render(self, path: Path | None) -> str:
        where = f"{path}" if path else "<recipe>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.stage_id:
            parts.append(f"stage '{self.stage_id}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"


class RecipeError(EdgepipeError):
    """The recipe file cannot be read or does not validate."""

    exit_code = ExitCode.RECIPE_INVALID

    def __init__(self, path: Path | None, issues: list[RecipeIssue]):
        self.path = path
        self.issues = issues
        lines = [issue.render(path) for issue in issues]
        header = f"recipe {path or ''} is invalid:" if len(lines) > 1 else None
        super().__init__("\n".join([header, *lines] if header else lines))


class GraphError(RecipeError):
    """The stages do not form a valid DAG (unknown input, cycle, wrong artifact kind)."""


class PreflightError(EdgepipeError):
    """A capability a stage needs (package, GPU, weights, network) is missing."""

    exit_code = ExitCode.PREFLIGHT_FAILED


class ToolchainError(PreflightError):
    """An isolated toolchain cannot be found or built (no Python of its version, no registry,
    conflicting pins): nothing was started."""


class StageError(EdgepipeError):
    """Raised by a stage for a failure the user can act on (model won't export, gate failed)."""


class StageInterrupted(StageError):
    """A stage's process was stopped because the run is being interrupted (SIGINT/SIGTERM)."""


class StageFailure(EdgepipeError):
    """One or more stages failed during a run; carries each stage's message."""

    def __init__(self, failures: dict[str, str], skipped: list[str]):
        self.failures = failures
        self.skipped = skipped
        lines = [f"stage '{sid}' failed: {msg}" for sid, msg in failures.items()]
        if skipped:
            lines.append("not run because an input failed: " + ", ".join(skipped))
        super().__init__("\n".join(lines))


class DriftError(EdgepipeError):
    """The recipe, its inputs or the toolchain no longer match the committed lockfile."""

    exit_code = ExitCode.DRIFT

    def __init__(self, lock: str, differences: list[str]):
        self.differences = differences
        super().__init__(
            f"{lock} is out of date ({len(differences)} difference(s)):\n"
            + "\n".join(f"  {d}" for d in differences)
            + "\nrun `edgepipe run` and commit the updated lockfile"
        )


class UsageError(EdgepipeError):
    """Command-line choices that cannot work together (e.g. --force of an unselected stage)."""

    exit_code = ExitCode.USAGE


class CacheError(EdgepipeError):
    """The cache is unusable or corrupt."""

    exit_code = ExitCode.CACHE_CORRUPT
