"""Read a local checkpoint into a module safely (``weights_only=True``), with readable errors."""

from __future__ import annotations

__all__ = ["load_into", "read_state_dict"]

from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception

# Training scripts wrap the state dict under one of these keys; timm's own order of preference.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict")


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors by name from a .safetensors or torch checkpoint, unwrapped and de-DataParalleled."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises SafetensorError, a bare Exception subclass
            raise StageError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError, EOFError: all "unreadable"
            raise StageError(
                f"cannot load checkpoint {path} with weights_only=True "
                f"({summarize_exception(exc)}). "
                "Save a plain state_dict (torch.save(model.state_dict(), ...)) or .safetensors"
            ) from None
    state = _unwrap(state, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unwrap(state: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                return state[key]
    if not isinstance(state, dict) or not state:
        raise StageError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def load_into(module: Any, path: Path, strict: bool, match_by: str = "name") -> None:
    """Load the checkpoint at ``path`` into ``module``; explain mismatches readably."""
    state = read_state_dict(path)
    if match_by == "order":
        state = _renamed_by_order(module, state, path)
    try:
        result = module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        text = str(exc)
        hint = (
            " — the classifier size differs: set num_classes to the checkpoint's"
            if "size mismatch" in text and ("head" in text or "fc" in text or "classifier" in text)
            else ""
        )
        raise StageError(
            f"checkpoint {path} does not fit the model{hint}: {_summarise(text)}"
        ) from None
    if not strict and (result.missing_keys or result.unexpected_keys):
        raise_if_nothing_loaded(module, state, path)


def _renamed_by_order(module: Any, state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's tensors under the model's names, paired by position. BatchNorm's
    ``num_batches_tracked`` counters are left out on both sides: some implementations keep them,
    others do not, and inference never reads them."""

    def tensors(named: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in named.items() if not k.endswith("num_batches_tracked")]

    ours, theirs = tensors(module.state_dict()), tensors(state)
    if len(ours) != len(theirs):
        raise StageError(
            f"checkpoint {path} holds {len(theirs)} tensors but the model has {len(ours)}: "
            "match_by: order needs the same tensors in the same order"
        )
    for index, ((name, mine), (other, given)) in enumerate(zip(ours, theirs, strict=True)):
        if tuple(mine.shape) != tuple(given.shape):
            raise StageError(
                f"checkpoint {path}: tensor {index} '{other}' {tuple(given.shape)} does not fit "
                f"the model's '{name}' {tuple(mine.shape)}; match_by: order needs the "
                "checkpoint's tensors in the model's order"
            )
    renamed = {name: given for (name, _), (_, given) in zip(ours, theirs, strict=True)}
    counters = {k: v for k, v in module.state_dict().items() if k.endswith("num_batches_tracked")}
    return {**renamed, **counters}


def raise_if_nothing_loaded(module: Any, state: dict[str, Any], path: Path) -> None:
    """strict: false still must load *something*; a checkpoint of another model is a mistake."""
    if not set(module.state_dict()) & set(state):
        raise StageError(f"checkpoint {path} shares no parameter names with the model")


def _summarise(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"
