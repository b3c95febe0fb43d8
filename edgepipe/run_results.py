"""What a run reports: per-stage results, and the observer interface the CLI displays."""

from __future__ import annotations

__all__ = ["Outcome", "RunObserver", "RunResult", "SilentObserver", "StageResult", "stage_warnings"]

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from edgepipe.planner import StagePlan

Outcome = Literal["built", "cached", "failed", "skipped"]


@dataclass
class StageResult:
    stage_id: str
    stage_type: str
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""
    output_size: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    peak_rss_bytes: int = 0
    node: str = ""
    """--executor ray: the node that built it."""


@dataclass
class RunResult:
    out_dir: Path
    stages: list[StageResult]

    @property
    def failed(self) -> list[StageResult]:
        return [s for s in self.stages if s.outcome == "failed"]


class RunObserver(Protocol):
    def stage_started(self, plan: StagePlan) -> None: ...
    def stage_finished(self, result: StageResult) -> None: ...
    def notice(self, message: str) -> None: ...


class SilentObserver:
    def stage_started(self, plan: StagePlan) -> None:
        pass

    def stage_finished(self, result: StageResult) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


def stage_warnings(log_text: str) -> list[str]:
    """Warnings a stage itself logged (not library noise): shown under the stage's line."""
    prefix = "WARNING edgepipe.stage."
    return [
        line.split(": ", 1)[1]
        for line in log_text.splitlines()
        if line.startswith(prefix) and ": " in line
    ]
