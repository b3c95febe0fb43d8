"""Content-addressed store, action cache and action keys (see DESIGN.md section 3).

Importing this package is cheap (no torch/onnx, no sqlite until a file digest is asked for),
because a fully cached run only hashes, looks up and materialises.
"""

from __future__ import annotations

__all__ = [
    "ActionRecord",
    "Cache",
    "CacheCorruptError",
    "ManifestEntry",
    "action_key",
    "canonical_json",
    "default_cache_dir",
]

from edgepipe.cache.keys import action_key, canonical_json, default_cache_dir
from edgepipe.cache.models import ActionRecord, CacheCorruptError, ManifestEntry
from edgepipe.cache.store import Cache
