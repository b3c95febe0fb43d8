"""Toolchain environments on disk: found, checked, built once per machine, reused.

Layout (``EDGEPIPE_TOOLCHAINS``, else ``<cache>/toolchains``)::

    <root>/<name>-py<X.Y>-<16 hex>/          a venv; the hex is the digest of its exact pins
    <root>/<name>-py<X.Y>-<16 hex>/edgepipe-toolchain.json    written last: "this one is whole"
    <root>/<name>-py<X.Y>-<16 hex>.lock      held while it is built
    <root>/<name>-py<X.Y>-<16 hex>.failed.log   the log of the last failed build

A venv is built in place under the lock, and counts as built only once its marker is there,
which is written after ``pip check`` and the probe imports passed. A killed build leaves a
folder without a marker: the next build (under the lock) removes it first. Two runs that want
the same toolchain wait for each other's build instead of building twice.
"""

from __future__ import annotations

__all__ = [
    "TOOLCHAINS_ENV",
    "isolated_environ",
    "build_toolchain",
    "built_python",
    "find_python",
    "toolchain_problems",
    "toolchain_root",
]

import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgepipe.errors import ToolchainError
from edgepipe.processes import die_with_parent
from edgepipe.tmp_names import tmp_name
from edgepipe.toolchains.declared import Toolchain

TOOLCHAINS_ENV = "EDGEPIPE_TOOLCHAINS"
MARKER = "edgepipe-toolchain.json"
_log = logging.getLogger(__name__)
_PIP_QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]
_OFFLINE_SIGNS = (
    "failed to establish a new connection",
    "temporary failure in name resolution",
    "network is unreachable",
    "connection refused",
    "max retries exceeded",
    "could not fetch url",
    "connectionerror",
    "read timed out",
)


# variables that would make a toolchain's Python see edgepipe's packages (PYTHONPATH=. in a
# checkout makes `pip check` there judge edgepipe's own requirements) or another venv
_DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")


def isolated_environ(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak edgepipe's Python into a toolchain's."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def toolchain_root(cache_root: Path) -> Path:
    """Where toolchains live: ``EDGEPIPE_TOOLCHAINS`` (shared by several caches), else the cache."""
    configured = os.environ.get(TOOLCHAINS_ENV)
    return Path(configured).expanduser() if configured else cache_root / "toolchains"


def built_python(toolchain: Toolchain, root: Path) -> Path | None:
    """The interpreter of ``toolchain``'s environment if it is fully built, else None."""
    env = root / toolchain.folder_name
    try:
        marker = json.loads((env / MARKER).read_text())
    except (OSError, ValueError):
        return None
    python = env / "bin" / "python"
    if marker.get("toolchain") != toolchain.key_facts() or not python.exists():
        return None
    return python


def _python_env_var(version: str) -> str:
    return "EDGEPIPE_PYTHON_" + version.replace(".", "_")


@functools.cache
def find_python(version: str) -> Path | None:
    """An interpreter of ``version`` (major.minor) that can make venvs, or None.

    Looks at ``EDGEPIPE_PYTHON_3_12``-style variables, ``python3.12`` on PATH (a pyenv shim
    that is not active fails the check and is skipped), pyenv's versions and /usr(/local)/bin.
    """
    configured = os.environ.get(_python_env_var(version))
    candidates = [Path(configured)] if configured else []
    if ".".join(platform.python_version_tuple()[:2]) == version:
        candidates.append(Path(sys.executable))
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(pyenv.glob(f"{version}.*/bin/python{version}"), reverse=True)
    candidates += [Path(f"/usr/local/bin/python{version}"), Path(f"/usr/bin/python{version}")]
    for candidate in candidates:
        if candidate.exists() and _runs_as(candidate, version):
            return candidate
    return None


def _runs_as(python: Path, version: str) -> bool:
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [str(python), "-c", probe],
            env=isolated_environ(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def toolchain_problems(toolchain: Toolchain, root: Path) -> list[str]:
    """Why ``toolchain`` could not be built here, found before any stage runs (none if built).

    Asks the registry, without installing, whether every pin exists and the set is consistent
    (``pip install --dry-run``): an offline machine, a pin the registry lacks and a conflict
    are each told apart, with the fix.
    """
    if built_python(toolchain, root) is not None:
        return []
    what = f"toolchain '{toolchain.name}' (Python {toolchain.python})"
    python = find_python(toolchain.python)
    if python is None:
        return [
            f"{what} is not built here and needs Python {toolchain.python}, which this machine "
            f"lacks: install it (e.g. `pyenv install {toolchain.python}`, or your system's "
            f"python{toolchain.python} with venv) or set {_python_env_var(toolchain.python)} "
            "to its interpreter"
        ]
    if not toolchain.requirements:
        return []
    done = _pip(python, ["install", "--dry-run", "--ignore-installed"], toolchain, timeout=600)
    if done.returncode == 0:
        return []
    return [f"{what} is not built here and cannot be: {_pip_failure(done.stdout, toolchain)}"]


def _pip(python: Path, args: list[str], toolchain: Toolchain, timeout: float):
    """``python -m pip <args> -r <the pins>``, output (stdout and stderr) in ``.stdout``."""
    requirements = "\n".join(toolchain.requirements) + "\n"
    command = [str(python), "-m", "pip", *args, *_PIP_QUIET, "--retries", "1", "--timeout", "20"]
    try:
        return subprocess.run(
            [*command, "-r", "/dev/stdin"],
            input=requirements,
            env=isolated_environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, f"pip took over {timeout:.0f} s")


def _pip_failure(output: str, toolchain: Toolchain) -> str:
    lowered = output.lower()
    detail = _last_line(output)
    if any(sign in lowered for sign in _OFFLINE_SIGNS):
        return (
            "the package registry cannot be reached. Fix: run once with network access (any run "
            f"that uses it, or `edgepipe toolchains --build {toolchain.name}`), or set "
            "EDGEPIPE_TOOLCHAINS to "
            f"a folder that holds it already built ({detail})"
        )
    if "resolutionimpossible" in lowered or "conflict" in lowered:
        return f"its requirements conflict: {detail}. Fix the pins (toolchain.requirements)"
    if "no matching distribution" in lowered or "could not find a version" in lowered:
        return f"a pinned version is not on the package registry: {detail}"
    return f"pip failed: {detail}"


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["no output"])[-1][:300]


def build_toolchain(toolchain: Toolchain, root: Path, log: logging.Logger = _log) -> Path:
    """The interpreter of ``toolchain``'s environment, building it first if needed.

    Raises:
        ToolchainError: It could not be built; the log's tail says why, the whole log is kept.
    """
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    env = root / toolchain.folder_name
    lock = FileLock(str(env) + ".lock")
    with lock:  # a second run waits here for the first one's build, then reuses it
        python = built_python(toolchain, root)
        if python is not None:
            return python
        if env.exists():
            log.warning("removing a half-built toolchain %s (a killed build)", env.name)
            shutil.rmtree(env)
        interpreter = find_python(toolchain.python)
        if interpreter is None:
            raise ToolchainError(toolchain_problems(toolchain, root)[0])
        log.info(
            "building toolchain '%s' (Python %s, %d packages) in %s: first use on this machine",
            toolchain.name,
            toolchain.python,
            len(toolchain.requirements),
            env,
        )
        started = time.monotonic()
        try:
            _install(toolchain, interpreter, env)
        except ToolchainError:
            failed_log = Path(str(env) + ".failed.log")
            shutil.copyfile(env / "build.log", failed_log)
            shutil.rmtree(env, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        _write_marker(env, toolchain, interpreter, seconds)
        log.info("toolchain '%s' built in %.0f s", toolchain.name, seconds)
        return env / "bin" / "python"


def _install(toolchain: Toolchain, interpreter: Path, env: Path) -> None:
    """venv, the pins without resolving, ``pip check``, the probe imports; each step logged."""
    env.mkdir(parents=True)
    (env / "requirements.txt").write_text("\n".join(toolchain.requirements) + "\n")
    python = str(env / "bin" / "python")
    steps = [("create the venv", [str(interpreter), "-m", "venv", str(env)])]
    if toolchain.requirements:
        install = [python, "-m", "pip", "install", "--no-deps", *_PIP_QUIET, "-r"]
        steps.append(("install the pins", [*install, "requirements.txt"]))
        check = [python, "-m", "pip", "check", "--disable-pip-version-check"]
        steps.append(("check their dependencies", check))
    if toolchain.probe:
        imports = "; ".join(f"import {module}" for module in toolchain.probe)
        steps.append(("import " + ", ".join(toolchain.probe), [python, "-c", imports]))
    with open(env / "build.log", "a", encoding="utf-8") as build_log:
        for step, command in steps:
            build_log.write(f"$ {' '.join(command)}\n")
            build_log.flush()
            done = subprocess.run(
                command,
                cwd=env,
                env=isolated_environ(),
                # a killed run must not leave pip writing into a folder the next run removes
                preexec_fn=die_with_parent,
                stdout=build_log,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if done.returncode != 0:
                why = _pip_failure((env / "build.log").read_text(errors="replace"), toolchain)
                raise ToolchainError(
                    f"toolchain '{toolchain.name}' could not {step}: {why} "
                    f"(whole log: {env}.failed.log)"
                )


def _write_marker(env: Path, toolchain: Toolchain, interpreter: Path, seconds: float) -> None:
    version = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
        env=isolated_environ(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    marker = {
        "toolchain": toolchain.key_facts(),
        "python_version": version,
        "interpreter": str(interpreter),
        "build_seconds": round(seconds, 1),
    }
    partial = env / tmp_name("marker")
    partial.write_text(json.dumps(marker, indent=2, sort_keys=True))
    os.replace(partial, env / MARKER)
