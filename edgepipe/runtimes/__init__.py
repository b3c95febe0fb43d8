"""Runtimes: how each kind of artifact is opened and run. Importing this package registers every
built-in runtime.

parity, evaluate, quantization targets and the benchmark all open artifacts here, so a new
runtime is one module in this package with a ``@register_runtime`` class (and its tests); it is
found here, so nothing else changes. Modules import heavy libraries only inside methods, so
importing them all stays cheap.
"""

import importlib
import pkgutil

from edgepipe.runtimes.base import (
    OpenVinoOptions,
    Runtime,
    RuntimeOptions,
    open_runtime,
    preflight_problems,
    registered_runtimes,
    runnable_kinds,
    runtime_for,
)

__all__ = [
    "OpenVinoOptions",
    "Runtime",
    "RuntimeOptions",
    "open_runtime",
    "preflight_problems",
    "registered_runtimes",
    "runnable_kinds",
    "runtime_for",
]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
    importlib.import_module(f"{__name__}.{_module}")
