"""Quantization that keeps its accuracy: try candidates in order of cost until one meets the
stage's target, keep the fastest that passes, and report every one.

The rungs (each tried only when everything before it missed):

1. the settings the recipe asks for (or, on a rebuild, those the lockfile recorded);
2. calibration: the other methods (MinMax / Percentile / Entropy) and per-channel on/off for
   ONNX Runtime; NNCF's presets and full bias correction for OpenVINO;
3. the most sensitive nodes kept float — measured per node on the best candidate so far
   (``_ort_sensitivity`` / ``_ov_sensitivity``), 1, 2, 4… of them;
4. the higher-precision fallback (fp16).

The kept settings go into the artifact's meta and the lockfile; with them a rebuild (CI) builds
that one candidate, checks it, and searches again only if it no longer passes.
"""

from __future__ import annotations

__all__ = ["quantize_with_target"]

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError
from edgepipe.stages.base import StageContext
from edgepipe.stages.quantize.target import CandidateCheck, Fidelity, time_ms

REPORT_FILE = "quantization.md"


@dataclass
class Tried:
    name: str
    settings: dict[str, Any]
    fidelity: Fidelity
    ms: float
    folder: Path
    meta: dict[str, Any]


def quantize_with_target(backend, spec, ctx: StageContext) -> dict[str, Any]:
    """Build candidates until one meets ``spec.target``; the kept one lands in ``ctx.out_dir``."""
    target = spec.target
    check = CandidateCheck(target, ctx.inputs[0], ctx.recipe_dir)
    ladder = _Ladder(backend, check, backend.scratch / "candidates", ctx.log)
    if _replayed(ladder, (ctx.recorded or {}).get("settings")):
        return _keep(ladder, ladder.tried[-1], target, ctx, "replayed from the lockfile")
    ladder.attempt("configured", backend.configured())
    if target.recover:
        for rung in (_calibration_rung, _sensitivity_rung, _fallback_rung):
            if ladder.passed():
                break
            rung(ladder, backend, target)
    if not ladder.passed():
        table = candidate_table(ladder.tried, None)
        raise StageError(
            f"no quantization candidate meets the target ({target.metric}): \n{table}\n"
            + _closest_problems(ladder.tried)
        )
    # Those that pass all come from the cheapest rung that had one (same cost): keep the most
    # faithful, the earliest on a tie. A choice by measured speed would differ between two
    # builds of the same inputs, and so would the artifact and the lock.
    best = min(ladder.passed(), key=lambda tried: tried.fidelity.score)
    return _keep(ladder, best, target, ctx, "searched")


def _replayed(ladder: _Ladder, recorded: dict[str, Any] | None) -> bool:
    """Build what the lockfile recorded; True when it still meets the target."""
    if not recorded:
        return False
    try:
        if ladder.attempt("recorded", recorded).fidelity.passed:
            return True
        ladder.log.warning(
            "the settings the lockfile recorded no longer meet the target: searching"
        )
    except (KeyError, TypeError, StageError) as exc:  # a lock edited by hand, another backend
        ladder.log.warning("cannot build the settings the lockfile recorded (%s): searching", exc)
    return False


class _Ladder:
    def __init__(self, backend, check: CandidateCheck, folder: Path, log):
        self.backend, self.check, self.folder, self.log = backend, check, folder, log
        self.tried: list[Tried] = []

    def attempt(self, name: str, settings: dict[str, Any]) -> Tried:
        folder = self.folder / f"{len(self.tried):02d}-{name}"
        meta = self.backend.build(settings, folder)
        candidate = self.check.open(folder, meta, self.backend.output_kind)
        fidelity = self.check.measure(candidate, meta["precision"])
        ms = time_ms(candidate, self.check.inputs[0])
        del candidate
        tried = Tried(name, settings, fidelity, ms, folder, meta)
        self.tried.append(tried)
        self.log.info(
            "candidate %s: %s, %.2f ms — %s",
            name,
            fidelity.headline,
            ms,
            "passes" if fidelity.passed else "misses: " + "; ".join(fidelity.problems)[:300],
        )
        return tried

    def passed(self) -> list[Tried]:
        return [t for t in self.tried if t.fidelity.passed]

    def best_int8(self) -> Tried | None:
        int8 = [t for t in self.tried if t.meta["precision"] == "int8"]
        return min(int8, key=lambda t: t.fidelity.score) if int8 else None


def _calibration_rung(ladder: _Ladder, backend, target) -> None:
    configured = backend.configured()
    if configured["mode"] != "static":
        return
    for name, variant in calibration_variants(backend.kind, configured):
        ladder.attempt(name, variant)


# Per backend: two settings to vary, their values (the usual first), and how a candidate whose
# second setting is off is named
_CALIBRATION_AXES = {
    "onnx-model": ("calibrate_method", ("minmax", "percentile", "entropy"), "per_channel"),
    "openvino-ir": ("preset", ("performance", "mixed"), "fast_bias_correction"),
    "torch-model": ("observer", ("histogram", "minmax"), "per_channel"),
}
_FLOAT_SETTING = {
    "onnx-model": "exclude_nodes",
    "openvino-ir": "ignored_names",
    "torch-model": "float_modules",
}
_OFF_SUFFIX = {"per_channel": "-per-tensor", "fast_bias_correction": "-bias-correction"}


def calibration_variants(kind: str, configured: dict[str, Any]) -> list[tuple[str, dict]]:
    """The calibration settings to try besides the configured ones: for ONNX Runtime the
    methods × per-channel, for NNCF the presets × fast or full bias correction."""
    first, values, switch = _CALIBRATION_AXES[kind]
    variants = []
    for on in (True, False):
        for value in values:
            if (value, on) == (configured[first], configured[switch]):
                continue
            name = value + ("" if on else _OFF_SUFFIX[switch])
            variants.append((name, {**configured, first: value, switch: on}))
    return variants


def _sensitivity_rung(ladder: _Ladder, backend, target) -> None:
    best = ladder.best_int8()
    if best is None or target.max_float_nodes == 0:
        return
    ranked = [name for name, loss in backend.sensitive_nodes(best, backend.calibration()[:8])]
    ladder.log.info("most sensitive nodes (dB lost): %s", ", ".join(ranked[:8]))
    key = _FLOAT_SETTING[backend.kind]
    count = 1
    while count <= min(target.max_float_nodes, len(ranked)):
        settings = {**best.settings, key: sorted({*best.settings[key], *ranked[:count]})}
        if ladder.attempt(f"{count}-float", settings).fidelity.passed:
            return
        count *= 2


def _fallback_rung(ladder: _Ladder, backend, target) -> None:
    already = any(t.settings["mode"] == "fp16" for t in ladder.tried)
    if target.fallback == "fp16" and not backend.has_fp16:
        ladder.log.warning("this back end builds INT8 only: no fp16 fallback to try")
    elif target.fallback == "fp16" and not already:
        ladder.attempt("fp16", {"mode": "fp16"})


def _keep(ladder: _Ladder, kept: Tried, target, ctx: StageContext, how: str) -> dict[str, Any]:
    for produced in kept.folder.iterdir():
        shutil.move(str(produced), ctx.out_dir / produced.name)
    table = candidate_table(ladder.tried, kept)
    ctx.log.info("kept candidate %s (%s):\n%s", kept.name, how, table)
    (ctx.out_dir / REPORT_FILE).write_text(
        f"Target: {target.metric}. Kept: {kept.name} ({how}).\n\n{table}\n"
    )
    recovery = {
        "target": target.model_dump(mode="json", include={"metric", "max_top1_drop"}),
        "chosen": how,
        "kept": kept.name,
        # the kept settings are not what the recipe asked for
        "recovered": kept.settings != ladder.backend.configured(),
        "candidates": [
            {
                "name": t.name,
                "settings": t.settings,
                "passed": t.fidelity.passed,
                "fidelity": t.fidelity.headline,
            }
            for t in ladder.tried
        ],
    }
    meta = dict(kept.meta)
    meta["quantization"] = {**meta["quantization"], "recovery": recovery}
    return meta


def candidate_table(tried: list[Tried], kept: Tried | None) -> str:
    rows = [
        "| candidate | settings | precision | fidelity | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for t in tried:
        verdict = "passes" if t.fidelity.passed else "misses"
        if t is kept:
            verdict = "**kept**"
        rows.append(
            f"| {t.name} | {_settings_text(t.settings)} | {t.meta['precision']} "
            f"| {t.fidelity.headline} | {verdict} |"
        )
    return "\n".join(rows)


def _settings_text(settings: dict[str, Any]) -> str:
    parts = []
    for key, value in settings.items():
        if key == "mode" or value in ([], None):
            continue
        if isinstance(value, list):
            shown = ", ".join(_short_node_name(v) for v in value[:3])
            value = f"{len(value)} kept float ({shown}{', …' if len(value) > 3 else ''})"
        parts.append(f"{key}={value}")
    return ", ".join(parts) or settings.get("mode", "")


def _short_node_name(name: str) -> str:
    """'/inner/blocks/blocks.0/blocks.0.0/conv_dw/Conv' → 'blocks.0.0/conv_dw'."""
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else name


def _closest_problems(tried: list[Tried]) -> str:
    closest = min(tried, key=lambda t: t.fidelity.score)
    return f"closest: {closest.name} — " + "; ".join(closest.fidelity.problems)
