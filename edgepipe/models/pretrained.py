"""Preflight for ``pretrained: true``: are the hub weights cached, or is the hub reachable?

Found before any stage runs, so an offline CI job fails in seconds with a fix, not after a
download timeout deep inside timm.
"""

from __future__ import annotations

__all__ = ["problems"]

import os
import socket

_HF_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
    "open_clip_model.safetensors",
)


def problems(name: str, pretrained: bool) -> list[str]:
    """Why ``timm.create_model(name, pretrained=pretrained)`` cannot work here; empty if it can."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        return [f"'{name}' is not a timm model{hint} (see timm.list_models())"]
    if not pretrained:
        return []
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a known architecture with an unknown tag: "Invalid pretrained tag"
        tags = timm.list_pretrained(f"{name.split('.')[0]}.*")[:8]
        hint = f"; available: {', '.join(tags)}" if tags else ""
        return [f"timm has no pretrained tag '{name}'{hint}"]
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return [f"timm has no pretrained weights for '{name}'; use pretrained: false or weights:"]
    if _cached(cfg) or _hub_reachable(cfg):
        return []
    source = f"Hugging Face repo '{cfg.hf_hub_id}'" if cfg.hf_hub_id else f"{cfg.url}"
    return [
        f"pretrained weights for '{name}' are not cached on this machine and {source} cannot be "
        "reached (offline). Fix one of: (1) on a machine with network run "
        f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` and copy its "
        "Hugging Face cache (~/.cache/huggingface, or $HF_HOME) here; (2) set "
        "`weights: path/to/checkpoint.safetensors` instead of `pretrained: true`; "
        "(3) use `pretrained: false` for random weights"
    ]


def _cached(cfg) -> bool:
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_FILES
        return any(isinstance(try_to_load_from_cache(repo, f), str) for f in filenames)
    import torch.hub

    filename = os.path.basename(cfg.url.split("?")[0])
    return os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", filename))


def _hub_reachable(cfg, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") and cfg.hf_hub_id:
        return False
    host = "huggingface.co" if cfg.hf_hub_id else cfg.url.split("/")[2]
    endpoint = os.environ.get("HF_ENDPOINT", "")
    if cfg.hf_hub_id and endpoint.startswith("http"):
        host = endpoint.split("/")[2].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
