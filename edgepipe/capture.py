"""Collect what a stage prints and logs into its log text, so the terminal stays readable.

Libraries like torch and onnxsim print to file descriptors 1 and 2 from C++, so both are
redirected at the descriptor level; Python logging and warnings are captured with a handler.
The CLI's progress display writes to its own duplicate of the terminal's stderr, so it stays
visible while a stage runs.
"""

from __future__ import annotations

__all__ = ["capture_stage_output"]

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def capture_stage_output(lines: list[str]) -> Iterator[None]:
    """Append every log record, warning and stdout line produced inside to ``lines``."""
    handler = _ListHandler(lines)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), _fd_to(1, "stdout", lines), _fd_to(2, "stderr", lines):
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(previous_level)


@contextmanager
def _fd_to(fd: int, label: str, lines: list[str]) -> Iterator[None]:
    """Send everything written to file descriptor ``fd`` (by Python or C++) into ``lines``."""
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        if stream.fileno() != fd:
            raise ValueError
    except (AttributeError, OSError, ValueError):  # pytest capture or an IDE console: no fd
        yield
        return
    stream.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(f"{label}: {line}" for line in text.splitlines() if line.strip())
