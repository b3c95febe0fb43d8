"""Isolated toolchains: environments (a Python version + exact pins) for stages whose tools
conflict with edgepipe's own pins, e.g. onnx2tf's onnx/onnxruntime/onnxsim.

How a stage uses one:

1. Ship the resolved requirement set as ``toolchains/requirements/<name>.txt`` (every
   distribution, ``name==version``) and register it in :mod:`declared` with its Python version
   and the modules that must import (``probe``).
2. Set ``toolchain = "<name>"`` on the stage class and give its spec a ``toolchain:
   ToolchainOverride | None`` field, so a recipe can change the Python or the pins.
3. In ``run``, call :func:`run_worker` with ``ctx.toolchain_python`` and a script in
   ``toolchains/workers/`` (stdlib + the toolchain's packages only); pass artifacts as files.

The runner does the rest: the pins go into the stage's action key (section ``toolchain``) and
so into the lockfile; preflight says before any stage runs when the environment is missing and
cannot be built (no such Python, registry unreachable, pins that conflict), with the fix; the
environment is built once per machine under a lock, and reused.
"""

from edgepipe.toolchains.declared import (
    Toolchain,
    ToolchainOverride,
    declared_toolchain,
    registered_toolchains,
)
from edgepipe.toolchains.environments import (
    TOOLCHAINS_ENV,
    build_toolchain,
    built_python,
    find_python,
    toolchain_problems,
    toolchain_root,
)
from edgepipe.toolchains.invoke import run_worker

__all__ = [
    "TOOLCHAINS_ENV",
    "Toolchain",
    "ToolchainOverride",
    "build_toolchain",
    "built_python",
    "declared_toolchain",
    "find_python",
    "registered_toolchains",
    "run_worker",
    "toolchain_problems",
    "toolchain_root",
]
