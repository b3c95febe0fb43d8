"""Canonical JSON and action keys.

An action key is the sha256 of the canonical JSON of everything that can change a stage's
result. The encoding below is part of the on-disk format: changing it changes every key and so
invalidates every user's cache (the golden tests in ``tests/test_cache_keys.py`` pin it).
"""

from __future__ import annotations

__all__ = ["action_key", "canonical_json", "default_cache_dir"]

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_ENV_VAR = "EDGEPIPE_CACHE"


def _reject(value: object) -> Any:
    # json.dumps calls this only for objects it cannot encode; converting them silently (e.g. a
    # Path via str) would make keys depend on where a file lives rather than what it contains.
    raise TypeError(
        f"{type(value).__name__} is not allowed in a cache key document: convert it to "
        "plain JSON first (a Path usually becomes the file's content digest)"
    )


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON: sorted keys, no whitespace, UTF-8, no NaN/Infinity.

    Args:
        obj: JSON-compatible data (dict, list, tuple, str, int, float, bool, None).

    Returns:
        The UTF-8 encoded JSON text.

    Raises:
        TypeError: ``obj`` contains something JSON cannot represent, such as a ``Path``.
        ValueError: ``obj`` contains NaN or an infinity.
    """
    text = json.dumps(
        obj,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_reject,
    )
    return text.encode("utf-8")


def action_key(document: dict[str, Any]) -> str:
    """Return the action key of a key document: the sha256 hex of its canonical JSON.

    Args:
        document: Everything that can change the result of an action.

    Raises:
        TypeError: ``document`` is not a dict or holds a non-JSON value.
    """
    if not isinstance(document, dict):
        raise TypeError(f"a key document must be a dict, not {type(document).__name__}")
    return hashlib.sha256(canonical_json(document)).hexdigest()


def default_cache_dir() -> Path:
    """Return ``$EDGEPIPE_CACHE`` if set, else the per-user cache directory for edgepipe."""
    configured = os.environ.get(_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    # Imported here: only needed when no root is configured, and it keeps the package import fast.
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgepipe"))
