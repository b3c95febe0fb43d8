"""Toolchain and hardware fingerprint: what goes into cache keys and reports.

Versions are read from installed distribution metadata, never by importing the package, so a
fully cached run stays free of torch & co.
"""

from __future__ import annotations

__all__ = ["cpu_model", "distribution_version", "machine_fingerprint", "tool_versions"]

import functools
import os
import platform
from importlib import metadata


@functools.cache
def distribution_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def tool_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when missing)."""
    return {name: distribution_version(name) for name in sorted(distributions)}


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fingerprint() -> dict[str, object]:
    """Facts about this machine that change benchmark numbers or compiled artifacts."""
    return {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
