"""Toolchain and hardware fingerprint: what goes into cache keys and reports.

Versions are read from installed distribution metadata, never by importing the package, so a
fully cached run stays free of torch & co.
"""

from __future__ import annotations

__all__ = [
    "cpu_model",
    "cpu_target",
    "cxx_compiler_problems",
    "distribution_version",
    "machine_fingerprint",
    "missing_modules",
    "tool_versions",
]

import functools
import importlib.util
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


def cpu_target() -> dict[str, str]:
    """What C++ compiled for this CPU (AOTInductor) depends on: in such an artifact's key."""
    return {"cpu": cpu_model(), "machine": platform.machine()}


def machine_fingerprint() -> dict[str, object]:
    """Facts about this machine that change benchmark numbers or compiled artifacts."""
    return {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


_IMPORT_NAMES = {
    "onnxruntime-gpu": "onnxruntime",
    "scikit-image": "skimage",
    "pyyaml": "yaml",
    "pillow": "PIL",
}


def missing_modules(distributions: tuple[str, ...]) -> list[str]:
    """Distributions whose top-level module cannot be found; does not import them."""
    missing = []
    for dist in distributions:
        module = _IMPORT_NAMES.get(dist, dist.replace("-", "_"))
        if importlib.util.find_spec(module) is None:
            missing.append(dist)
    return missing


def cxx_compiler_problems(what: str) -> list[str]:
    """``what`` needs a C++ compiler on PATH (Inductor writes and compiles C++ on the CPU)."""
    import shutil

    if any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return []
    return [f"{what} compiles C++: install a compiler (e.g. apt install g++, or build-essential)"]
