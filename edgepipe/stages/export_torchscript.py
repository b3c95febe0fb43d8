"""``export-torchscript``: torch model → TorchScript (``model.pt``, or ``model.ptl`` for the
lite interpreter); runtimes/torchscript.py runs it.

The saved file is checked against the eager model on the example and on an unseen input, so a
trace that froze input-dependent control flow fails here, not on a device. Same weights give the
same bytes in edgepipe's per-stage processes (debug info embeds the model's source paths).
"""

from __future__ import annotations

__all__ = [
    "ExportTorchScriptSpec",
    "ExportTorchScriptStage",
]

import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.torch_model import input_only, output_tensors, rebuild
from edgepipe.runtimes.torchscript import FULL_FILE, load_torchscript
from edgepipe.spec_bounds import MAX_BATCH
from edgepipe.stages.base import (
    ArtifactKind,
    FieldError,
    SingleInputSpec,
    Stage,
    StageContext,
    register_stage,
)

LITE_FILE = "model.ptl"
_RTOL = 1e-4  # of the largest reference output; fp32 rewrites (freezing folds BN) stay ~1e-7
_NO_XNNPACK = (
    "needs a torch built with XNNPACK, which this one is not: set optimize_for_mobile: false "
    "(lite_interpreter: true alone still gives a .ptl for PyTorch Mobile)"
)


class ExportTorchScriptSpec(SingleInputSpec):
    """Export a torch model to TorchScript, for libtorch (C++) or PyTorch Mobile."""

    type: Literal["export-torchscript"] = Field(description="Stage type.")
    method: Literal["trace", "script"] = Field(
        default="trace",
        description="'trace' records the operations run on an example input (input-dependent "
        "values are frozen, with a warning); 'script' compiles the Python code, control flow "
        "included, but fails on much Python.",
    )
    freeze: bool = Field(
        default=True, description="torch.jit.freeze: inline weights as constants, fold Conv+BN."
    )
    optimize_for_mobile: bool = Field(
        default=False,
        description="torch.utils.mobile_optimizer.optimize_for_mobile (XNNPACK prepacking, "
        "fusions); it freezes the module itself. Needs a torch built with XNNPACK.",
    )
    lite_interpreter: bool = Field(
        default=False, description="Save model.ptl for PyTorch Mobile's lite interpreter."
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=MAX_BATCH,
        description=f"Batch of the example input to trace (at most {MAX_BATCH}).",
    )
    check_trace: bool = Field(
        default=True, description="torch.jit.trace re-runs the example and compares (trace only)."
    )

    @model_validator(mode="after")
    def _options_fit(self) -> ExportTorchScriptSpec:
        if self.optimize_for_mobile and not self.freeze:
            raise FieldError("freeze", "optimize_for_mobile always freezes; drop freeze: false")
        return self


@register_stage
class ExportTorchScriptStage(Stage):
    type = "export-torchscript"
    spec_class = ExportTorchScriptSpec
    version = 2  # 2: saved without debug records (reproducible bytes)
    tools = ("torch", "timm")
    input_kinds = (ArtifactKind.TORCH_MODEL,)
    output = ArtifactKind.TORCHSCRIPT
    summary = "Export a torch model to TorchScript (.pt, or .ptl for the lite interpreter)."

    def preflight(self, spec: ExportTorchScriptSpec, recipe_dir: Path) -> list[str]:
        problems = super().preflight(spec, recipe_dir)
        if problems or not spec.optimize_for_mobile:
            return problems
        import torch

        # a private probe; where a torch lacks it, run() reports optimize_for_mobile's own error
        xnnpack = getattr(torch._C, "_is_xnnpack_enabled", lambda: True)()
        return [] if xnnpack else [f"optimize_for_mobile {_NO_XNNPACK} (torch {torch.__version__})"]

    def run(self, spec: ExportTorchScriptSpec, ctx: StageContext) -> dict[str, Any]:
        import torch

        source = ctx.inputs[0]
        module = input_only(rebuild(source.path, ctx.recipe_dir), source.meta.get("task"))
        size = source.meta["data_config"]["input_size"]
        example = torch.randn(spec.batch_size, *size, generator=torch.Generator().manual_seed(0))
        target = ctx.out_dir / (LITE_FILE if spec.lite_interpreter else FULL_FILE)
        with _reported_warnings(ctx) as trace_warnings, torch.no_grad():
            _export(module, example, spec, target)
        traced = trace_warnings if spec.method == "trace" else None
        with torch.no_grad():
            worst, dynamic = _check_saved(module, load_torchscript(target), example, traced, ctx)
        ctx.log.info("%s (%s): max abs difference to eager %.3g", target.name, spec.method, worst)
        return {
            **source.meta,
            "model_file": target.name,
            "method": spec.method,
            "optimized_for_mobile": spec.optimize_for_mobile,
            "lite_interpreter": spec.lite_interpreter,
            "batch_size": spec.batch_size,
            "dynamic_batch": dynamic,
            "precision": "fp32",
        }


def _export(module, example, spec: ExportTorchScriptSpec, target: Path) -> None:
    """Trace or script, then freeze or optimize for mobile, then save to ``target``."""
    import torch
    from torch.utils.mobile_optimizer import optimize_for_mobile

    try:
        if spec.method == "script":
            compiled = torch.jit.script(module)
        else:  # strict=False: a model may return a dict or list of outputs
            compiled = torch.jit.trace(module, example, check_trace=spec.check_trace, strict=False)
    except Exception as exc:  # the compiler and tracer raise RuntimeError, NotSupportedError…
        if spec.method == "script":
            raise StageError(_script_failure(exc)) from None
        raise StageError(
            f"tracing failed: {summarize_exception(exc)}. Try method: script"
        ) from None
    if spec.optimize_for_mobile:
        try:  # it freezes by itself: freezing first would only run the same passes twice
            compiled = optimize_for_mobile(compiled)
        except RuntimeError as exc:
            raise StageError(f"optimize_for_mobile failed: {summarize_exception(exc)}") from None
    elif spec.freeze:
        compiled = torch.jit.freeze(compiled)
    if spec.lite_interpreter:  # bytecode for PyTorch Mobile; else full TorchScript for libtorch
        compiled._save_for_lite_interpreter(str(target))
    else:
        _save_reproducibly(compiled, target)


def _save_reproducibly(compiled, target: Path) -> None:
    """``torch.jit.save`` without the ``*.debug_pkl`` records. They hold the Python call stack
    of the trace (the executor's frames, site-packages paths), so the same model saved from a
    local run, a Ray worker or another checkout had other bytes; without them the same model
    gives the same bytes (in a fresh stage process: the jit's name-mangling counter starts at
    the same place)."""
    import tempfile

    import torch

    from edgepipe.models.torch_export import rewrite_archive

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        full = Path(scratch) / target.name  # the archive's folder is named after the file
        torch.jit.save(compiled, str(full))
        rewrite_archive(full, target, _without_debug_records)


def _without_debug_records(name: str, data: bytes) -> bytes | None:
    return None if name.endswith(".debug_pkl") else data


def _check_saved(eager, loaded, example, traced: list[str] | None, ctx) -> tuple[float, bool]:
    """The largest difference to eager on the example and on an unseen input with one sample more
    (StageError beyond tolerance; ``traced``: trace warnings, the likely cause); and whether that
    other batch size runs at all."""
    import torch

    frozen = f" ({'; '.join(traced)})" if traced else ""
    hint = f". The trace froze an input-dependent value{frozen}; try method: script"
    hint = "" if traced is None else hint
    seeded = torch.Generator().manual_seed(1)
    unseen = torch.randn(len(example) + 1, *example.shape[1:], generator=seeded)
    try:
        on_unseen = loaded(unseen)
    except Exception as exc:  # a baked-in batch size fails in reshape, view, broadcasting…
        why = (str(exc).strip().splitlines() or [""])[-1]  # TorchScript puts the cause last
        ctx.log.warning("the saved model works for batch %d only (%s)", len(example), why)
        unseen, on_unseen = unseen[: len(example)], None
    worst = _difference(eager, loaded, example, "the example input", hint)
    worst = max(worst, _difference(eager, loaded, unseen, "an unseen input", hint, on_unseen))
    return worst, len(unseen) > len(example)


def _difference(eager, loaded, batch, what: str, hint: str, outputs=None) -> float:
    """``outputs``: the saved model's, when already computed on ``batch``."""
    expected = output_tensors(eager(batch))
    actual = output_tensors(loaded(batch) if outputs is None else outputs)
    shapes = [tuple(t.shape) for t in expected]
    if shapes != [tuple(t.shape) for t in actual]:
        raise StageError(f"on {what} the saved model's output shapes differ from {shapes}{hint}")
    worst = 0.0
    for ref, got in zip(expected, actual, strict=True):
        diff = (ref.float() - got.float()).abs().max().item()
        limit = _RTOL * max(ref.abs().max().item(), 1e-6)
        if not diff <= limit:  # also catches NaN
            raise StageError(
                "the saved TorchScript model does not compute what the eager model does: "
                f"max abs difference {diff:.3g} on {what} (allowed {limit:.3g}){hint}"
            )
        worst = max(worst, diff)
    return worst


@contextmanager
def _reported_warnings(ctx: StageContext) -> Iterator[list[str]]:
    """Log the warnings raised inside once each. A trace warning names input-dependent code whose
    value the trace froze: the user sees it, with where; the yielded list gets it too."""
    import torch

    places: dict[str, list[str]] = {}
    reported: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None):
        tracer = issubclass(category, torch.jit.TracerWarning)
        places.setdefault(str(message).split(". ")[0], []).append(_caller() if tracer else "")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        yield reported
    for text, found in places.items():
        where = list(dict.fromkeys(w for w in found if w))[:4]  # enough to find the code
        if where:
            reported.append(f"{text}, at {', '.join(where)}")
            ctx.log.warning("trace warning: %s", reported[-1])
        else:  # torch deprecating TorchScript and the like: for the log, once
            ctx.log.info("torch: %s", text)


def _caller() -> str:
    """The innermost frame outside torch and edgepipe: the model's line, not torch's own."""
    import torch

    own = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]), warnings.__file__)
    outside = [f for f in traceback.extract_stack() if not f.filename.startswith(own)]
    return f"{outside[-1].filename.rpartition('site-packages/')[2]}:{outside[-1].lineno}"


def _script_failure(exc: BaseException) -> str:
    """The compiler's complaint and where (its message spans a marked-up source excerpt)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    at = next((i for i, ln in enumerate(lines[:-1]) if ln.startswith('File "')), None)
    path, _, line = lines[at][6:].partition('", line ') if at is not None else ("", "", "")
    path = path.rpartition("site-packages/")[2]
    where = f" ({path}, line {line}: {lines[at + 1]})" if at is not None else ""
    return (
        f"method: script failed, TorchScript cannot compile the model's code: "
        f"{lines[0].rstrip(':')[:300]}{where}. Much Python (in timm's models too) is beyond "
        "TorchScript; use method: trace (the default), which records the operations it runs"
    )
