"""The benchmark stage's work: open each artifact in its runtime, time it, build the report."""

from __future__ import annotations

__all__ = ["default_threads", "measure_all", "runtime_options"]

import gc
import os
from dataclasses import replace
from typing import Any

from edgepipe.env import machine_fingerprint, tool_versions
from edgepipe.errors import StageError, summarize_exception
from edgepipe.imaging.samples import load_images
from edgepipe.runtimes import OpenVinoOptions, RuntimeOptions, open_runtime, runtime_for
from edgepipe.stages.base import Artifact, ArtifactKind, StageContext
from edgepipe.stages.benchmark.inputs import (
    prepare_batches,
    time_gpu_preprocessing,
    time_preprocessing,
)
from edgepipe.stages.benchmark.timing import measure


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def runtime_options(spec, threads: int | None, recipe_dir) -> RuntimeOptions:
    """How the benchmark opens every artifact: its threads, providers and OpenVINO settings."""
    openvino = spec.openvino
    return RuntimeOptions(
        threads=threads,
        onnxruntime_providers=tuple(spec.onnxruntime_providers),
        openvino=OpenVinoOptions(
            device=openvino.device,
            hint=openvino.hint,
            precision=None if openvino.precision == "default" else openvino.precision,
        ),
        recipe_dir=recipe_dir,
        channels_last=spec.channels_last,
    )


def measure_all(
    spec,
    ctx: StageContext,
    artifacts: list[Artifact],
    reference: Artifact,
    verdicts: dict[str, str],
) -> dict[str, Any]:
    """Time every artifact at every batch size; rows carry speedup vs the torch eager row."""
    threads = spec.threads or default_threads()
    folder = ctx.resolve(spec.images) if spec.images else None
    images = [image for _, image in load_images(folder, 8)]
    data_config = reference.meta["data_config"]
    preprocess_ms = time_preprocessing(images, data_config)
    options = runtime_options(spec, threads, ctx.recipe_dir)
    uses_gpu = _uses_gpu(options, artifacts)
    gpu_preprocess_ms = time_gpu_preprocessing(images, data_config, ctx.log) if uses_gpu else None
    rows = []
    for artifact in artifacts:
        target = open_runtime(artifact, options)
        on_device = target.on_gpu and gpu_preprocess_ms is not None
        host_ms = gpu_preprocess_ms if on_device else preprocess_ms
        fixed = _fixed_batch(artifact)
        for batch_size in spec.batch_sizes:
            if fixed is not None and batch_size != fixed:
                ctx.log.warning(
                    "%s takes batches of %d only: batch size %d skipped",
                    artifact.stage_id,
                    fixed,
                    batch_size,
                )
                continue
            rows.append(
                _row(
                    spec,
                    ctx,
                    artifact,
                    target,
                    images,
                    data_config,
                    batch_size,
                    host_ms,
                    verdicts,
                )
            )
            rows[-1]["host_preprocessing"] = "cupy" if on_device else "pil"
        del target
        gc.collect()  # one model in memory at a time
    notes = []
    for backend in spec.torch_compile:
        try:
            rows += compiled_rows(backend, reference, options, images, preprocess_ms, ctx, spec)
        except StageError:
            raise  # a compiled module that computes something else fails the stage
        except Exception as exc:  # a backend that cannot compile this model with this torch
            notes.append(
                f"torch.compile {backend}: not timed, it failed to compile: "
                f"{summarize_exception(exc, 200)}"
            )
            ctx.log.warning("%s", notes[-1])
    _add_speedups(rows, reference)
    return {
        "recipe": ctx.stage_id,
        "environment": _environment(spec, uses_gpu),
        "method": {
            "threads": threads,
            "warmup_seconds": spec.warmup_seconds,
            "window_seconds": spec.window_seconds,
            "stability": spec.stability,
            "max_seconds": spec.max_seconds,
            "images": len(images),
            "openvino": spec.openvino.model_dump(),
            "onnxruntime_providers": list(spec.onnxruntime_providers),
        },
        "preprocess_ms": preprocess_ms,
        "gpu_preprocess_ms": gpu_preprocess_ms,
        "rows": rows,
        "notes": notes,
    }


def compiled_rows(backend, reference, options, images, preprocess_ms, ctx, spec) -> list[dict]:
    """The reference model through torch.compile: its parity against eager first (a compiled
    module that breaks the fp32 gates fails the stage), then one row per batch size, with the
    compile time (the first call of each shape) apart from the steady state."""
    from edgepipe.stages.benchmark.compiled import compiled_parity

    target = open_runtime(reference, replace(options, torch_compile=backend))
    verdict = compiled_parity(reference, target, images, options.recipe_dir)
    rows = []
    for batch_size in spec.batch_sizes:
        row = _row(
            spec,
            ctx,
            reference,
            target,
            images,
            reference.meta["data_config"],
            batch_size,
            preprocess_ms,
            {},
        )
        shape_seconds = [s for shape, s in target.compile_seconds.items() if shape[0] == batch_size]
        row.update(
            label=f"{reference.stage_id} [{backend}]",
            parity=verdict,
            compile_s=round(sum(shape_seconds), 2),
            host_preprocessing="pil",
        )
        rows.append(row)
    return rows


def _row(
    spec,
    ctx: StageContext,
    artifact: Artifact,
    target,
    images,
    data_config,
    batch_size: int,
    preprocess_ms: float,
    verdicts: dict[str, str],
) -> dict[str, Any]:
    batches = prepare_batches(target, images, data_config, batch_size)
    result = measure(
        target.run,
        batches,
        batch_size,
        warmup_seconds=spec.warmup_seconds,
        window_seconds=spec.window_seconds,
        stability=spec.stability,
        max_seconds=spec.max_seconds,
        in_flight=target.in_flight,
    )
    summary = result.summary()
    host = 0.0 if target.composed else preprocess_ms * batch_size
    ctx.log.info(
        "%s (%s, batch %d): p50 %.2f ms, %d iterations%s",
        artifact.stage_id,
        target.label,
        batch_size,
        summary["p50_ms"],
        summary["iterations"],
        "" if result.stable else ", NOT stable",
    )
    parity = (
        "reference" if artifact.kind == ArtifactKind.TORCH_MODEL else verdicts.get(artifact.digest)
    )
    return {
        "label": artifact.stage_id,
        "kind": artifact.kind.value,
        "runtime": target.label,
        "precision": target.precision,
        "exec_precision": target.exec_precision,
        "size_bytes": target.size_bytes(),
        "composed": target.composed,
        **summary,
        "e2e_p50_ms": summary["p50_ms"] + host,
        "parity": parity,
    }


def _environment(spec, uses_gpu: bool) -> dict[str, Any]:
    """Where the numbers were measured: the machine, the tools, and the GPU if one was used
    (the baseline gate compares like with like only on the same hardware)."""
    from edgepipe.stages.base import get_stage

    tools = get_stage("benchmark").tools_for(spec)
    environment = {**machine_fingerprint(), "tools": tool_versions(tools)}
    if uses_gpu:
        from edgepipe.gpu import gpu_fingerprint

        environment["gpu"] = gpu_fingerprint()
    return environment


def _uses_gpu(options: RuntimeOptions, artifacts: list[Artifact]) -> bool:
    """Whether some artifact's runtime takes the GPU with the benchmark's options (a GPU
    execution provider asked for, or a TensorRT artifact: it runs on its GPU)."""
    return any(runtime_for(a).needs_gpu(options) for a in artifacts)


def _fixed_batch(artifact: Artifact) -> int | None:
    """The batch size an exported graph is fixed to (e.g. ``dynamic_batch: false``), if any."""
    inputs = artifact.meta.get("inputs") or []
    first = inputs[0]["shape"][0] if inputs and inputs[0]["shape"] else None
    return first if isinstance(first, int) else None


def _add_speedups(rows: list[dict[str, Any]], reference: Artifact) -> None:
    baseline = {
        r["batch_size"]: r["e2e_p50_ms"]
        for r in rows
        if r["label"] == reference.stage_id and r["kind"] == "torch-model"
    }
    for row in rows:
        base = baseline.get(row["batch_size"])
        row["speedup"] = base / row["e2e_p50_ms"] if base else None
