"""What a toolchain is: a Python version and an exact, fully resolved set of requirements.

A stage type whose tools conflict with edgepipe's own pins declares one by name (``Stage.
toolchain``); a recipe may override its Python version or its whole requirement set with the
stage's ``toolchain:`` field. The requirement set is a *lock*: every distribution the tools need,
each ``name==version``, installed without resolving again. So the key of the environment, and of
every artifact it builds, is known before anything is installed, and offline.
"""

from __future__ import annotations

__all__ = [
    "Toolchain",
    "ToolchainOverride",
    "declared_toolchain",
    "parse_pin",
    "read_requirements",
    "register_toolchain",
    "registered_toolchains",
]

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

_REQUIREMENTS_DIR = Path(__file__).parent / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_PYTHON = r"^3\.\d{1,2}$"
_MAX_REQUIREMENTS = 500


def parse_pin(line: str) -> tuple[str, str]:
    """``(normalised name, version)`` of one ``name==version`` line.

    Raises:
        ValueError: Not an exact pin (a range, an extra, a URL): a toolchain must be fully
            resolved, or its key would not say what it installs.
    """
    match = _PIN.match(line.strip())
    if not match:
        raise ValueError(
            f"{line.strip()!r} is not an exact pin: write name==version (a toolchain lists every "
            "distribution it installs, resolved; see `edgepipe toolchains --help`)"
        )
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(2)


@dataclass(frozen=True)
class Toolchain:
    """An isolated environment a stage's work runs in."""

    name: str
    python: str
    """Major.minor, e.g. ``3.12``."""
    requirements: tuple[str, ...]
    """Exact pins of every distribution installed, sorted."""
    probe: tuple[str, ...] = ()
    """Modules that must import in the built environment before it counts as built."""

    def pins(self) -> dict[str, str]:
        return dict(parse_pin(line) for line in self.requirements)

    def key_facts(self) -> dict[str, object]:
        """What goes into the action key and the lockfile of a stage built in it."""
        return {"name": self.name, "python": self.python, "requirements": self.pins()}

    @property
    def folder_name(self) -> str:
        """``<name>-py<python>-<16 hex>``: one folder per distinct environment."""
        canonical = json.dumps(self.key_facts(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return f"{self.name}-py{self.python}-{digest}"


class ToolchainOverride(BaseModel):
    """A recipe's change to a stage's toolchain; unset fields keep the stage type's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str | None = Field(
        default=None, pattern=_PYTHON, description="Python version, major.minor (e.g. '3.12')."
    )
    requirements: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=_MAX_REQUIREMENTS,
        description=(
            "Every distribution to install, each 'name==version' (a complete, resolved set: it "
            "is installed without dependency resolution and checked with `pip check`)."
        ),
    )

    @field_validator("requirements")
    @classmethod
    def _exact_pins(cls, lines: list[str] | None) -> list[str] | None:
        if lines is not None:
            names = [parse_pin(line)[0] for line in lines]
            if duplicated := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"listed more than once: {', '.join(duplicated)}")
        return lines

    def apply(self, base: Toolchain) -> Toolchain:
        requirements = base.requirements
        if self.requirements is not None:
            requirements = tuple(sorted(line.strip() for line in self.requirements))
        return Toolchain(base.name, self.python or base.python, requirements, base.probe)


def read_requirements(filename: str) -> tuple[str, ...]:
    """The pins of a requirements lock shipped with edgepipe (comments and blanks skipped)."""
    text = (_REQUIREMENTS_DIR / filename).read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    pins = tuple(sorted(line for line in lines if line))
    for line in pins:
        parse_pin(line)
    return pins


_REGISTRY: dict[str, Toolchain] = {}


def register_toolchain(toolchain: Toolchain) -> Toolchain:
    if toolchain.name in _REGISTRY:
        raise ValueError(f"toolchain {toolchain.name!r} registered twice")
    _REGISTRY[toolchain.name] = toolchain
    return toolchain


def declared_toolchain(name: str) -> Toolchain:
    return _REGISTRY[name]


def registered_toolchains() -> dict[str, Toolchain]:
    return dict(_REGISTRY)


# onnx2tf (convert-tflite): Python >= 3.12, and pins that conflict with edgepipe's onnx,
# onnxruntime and onnxsim (MEASUREMENTS #13).
register_toolchain(
    Toolchain("onnx2tf", "3.12", read_requirements("onnx2tf.txt"), probe=("onnx2tf",))
)
