"""``benchmark``: time every artifact on real images against torch eager, with stable windows,
pinned threads and the environment recorded; write JSON, Markdown and a plot."""

from __future__ import annotations

__all__ = ["BenchmarkSpec", "BenchmarkStage", "OpenVinoSettings"]

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepipe.errors import StageError
from edgepipe.spec_bounds import MAX_BATCH, MAX_THREADS
from edgepipe.stages.base import (
    ArtifactKind,
    MultiInputSpec,
    Stage,
    StageContext,
    StageSpec,
    missing_modules,
    register_stage,
)


class OpenVinoSettings(BaseModel):
    """How OpenVINO artifacts are run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(default="CPU", description="OpenVINO device: CPU, GPU, AUTO…")
    hint: Literal["latency", "throughput"] = Field(
        default="latency",
        description=(
            "PERFORMANCE_HINT. throughput: OpenVINO's optimal number of requests run at once; "
            "the row's latency is per request under that load, its throughput counts them all."
        ),
    )
    precision: Literal["default", "f32", "bf16", "f16"] = Field(
        default="default",
        description=(
            "INFERENCE_PRECISION_HINT; default lets OpenVINO choose (bf16 on AMX CPUs). The report "
            "records what ran."
        ),
    )


class BenchmarkSpec(MultiInputSpec):
    """Time artifacts; parity stages among `inputs` add their verdict to the table."""

    input_fields: ClassVar[tuple[str, ...]] = ("inputs", "reference")

    type: Literal["benchmark"] = Field(description="Stage type.")
    reference: str | None = Field(
        default=None,
        description=(
            "torch-model stage timed in eager mode as the baseline; default: the nearest "
            "torch-model ancestor of the first input."
        ),
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = Field(
        default_factory=lambda: [1],
        min_length=1,
        max_length=16,
        description=f"Batch sizes to sweep (at most 16, each 1..{MAX_BATCH}).",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=MAX_THREADS,
        description="Threads for every runtime (pinned, recorded; at most "
        f"{MAX_THREADS}); default: all CPU cores.",
    )
    warmup_seconds: float = Field(
        default=1.0, ge=0, le=600, description="Warm-up before timing (at most 600)."
    )
    window_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Length of a timing window (at most 60)."
    )
    stability: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description=(
            "Stop when 3 consecutive window means are within this fraction (at most 1) of each "
            "other."
        ),
    )
    max_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="Time cap per artifact and batch size (at most 3600); the row is marked "
        "unstable when hit.",
    )
    onnxruntime_providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers, in priority order.",
    )
    openvino: OpenVinoSettings = Field(
        default_factory=OpenVinoSettings, description=("OpenVINO runtime settings.")
    )
    images: Path | None = Field(
        default=None, description=("Folder of input images; default: scikit-image's photos.")
    )
    baseline: Path | None = Field(
        default=None,
        description=(
            "A committed benchmark.json, or a recipe's metrics file (<recipe>.metrics.json, "
            "this stage's rows): fail when an artifact is slower than it by more than "
            "max_regression on the same hardware and threads."
        ),
    )
    max_regression: float = Field(
        default=0.10,
        ge=0,
        le=100,
        description="Allowed p50 slowdown vs the baseline (fraction, at most 100).",
    )
    torch_compile: list[Literal["inductor", "inductor-max-autotune", "openvino"]] = Field(
        default_factory=list,
        max_length=3,
        description=(
            "Also time the reference torch model through torch.compile with these backends "
            "(inductor; inductor with mode max-autotune-no-cudagraphs; OpenVINO's "
            "openvino.torch). Compile time is reported apart from latency, and each compiled "
            "module must pass the fp32 parity gates against eager on the benchmark's photos."
        ),
    )
    channels_last: bool = Field(
        default=False,
        description="Run the torch eager and torch.compile rows in channels-last memory format.",
    )

    key_when_set: ClassVar[tuple[str, ...]] = ("torch_compile", "channels_last")

    def needs_gpu(self) -> bool:
        """Whether ONNX Runtime is asked for a GPU execution provider."""
        return any(p != "CPUExecutionProvider" for p in self.onnxruntime_providers)

    def file_fields(self) -> dict[str, Path]:
        return {"baseline": self.baseline} if self.baseline else {}

    def dir_fields(self) -> dict[str, Path]:
        return {"images": self.images} if self.images else {}


@register_stage
class BenchmarkStage(Stage):
    type = "benchmark"
    spec_class = BenchmarkSpec
    version = 2  # 2: throughput hint in flight, fixed batches skipped, CuPy on GPU rows
    tools = ("torch", "timm", "onnxruntime", "openvino", "numpy", "pillow", "matplotlib")
    output = ArtifactKind.REPORT
    summary = "Time artifacts on real images vs torch eager; JSON, Markdown table and plot."
    reports = True
    measures_time = True
    not_reproducible = "timings: every run measures anew"

    def measurements(self, files: dict[str, Path]) -> dict[str, Any]:
        if "benchmark.json" not in files:
            return {}
        report = json.loads(files["benchmark.json"].read_text())
        # the threads it ran with: a baseline compares like with like, a diff shows the change
        return {"threads": report["method"]["threads"]} | {
            f"{r['label']}@{r['batch_size']}": {
                "p50_ms": round(r["p50_ms"], 3),
                "p90_ms": round(r["p90_ms"], 3),
                "throughput_per_s": round(r["throughput_per_s"], 1),
                "speedup": round(r["speedup"] or 0, 2),
            }
            for r in report["rows"]
        }

    def report_section(self, stage_id: str, files: dict[str, Path]) -> str | None:
        return f"### {stage_id}\n\n" + files["benchmark.md"].read_text().strip()

    def accepted_kinds(self, field: str, spec: StageSpec | None = None) -> tuple[ArtifactKind, ...]:
        if field == "reference":
            return (ArtifactKind.TORCH_MODEL,)
        from edgepipe.runtimes import runnable_kinds

        return (*runnable_kinds(), ArtifactKind.REPORT)

    def tools_for(self, spec: BenchmarkSpec) -> tuple[str, ...]:
        # on a CUDA machine ONNX Runtime is the onnxruntime-gpu distribution
        return (*self.tools, "onnxruntime-gpu") if spec.needs_gpu() else self.tools

    def preflight(self, spec: BenchmarkSpec, recipe_dir: Path) -> list[str]:
        from edgepipe.env import cxx_compiler_problems
        from edgepipe.runtimes import preflight_problems
        from edgepipe.stages.benchmark.measure import runtime_options

        problems = super().preflight(spec, recipe_dir) + preflight_problems(
            runtime_options(spec, spec.threads, recipe_dir)
        )
        if any(backend.startswith("inductor") for backend in spec.torch_compile):
            problems += cxx_compiler_problems("torch_compile: inductor")
        if "openvino" in spec.torch_compile and missing_modules(("openvino",)):
            problems.append("torch_compile: openvino needs pip install 'edgepipe[openvino]'")
        return problems

    def key_extra(self, spec: BenchmarkSpec) -> dict[str, Any]:
        from edgepipe.env import machine_fingerprint

        # timings belong to a machine, and the table is labelled with the stage ids
        extra = {"machine": machine_fingerprint(), "labels": list(spec.inputs)}
        if spec.needs_gpu():
            from edgepipe.gpu import gpu_fingerprint

            extra["gpu"] = gpu_fingerprint()
        return extra

    def run(self, spec: BenchmarkSpec, ctx: StageContext) -> dict[str, Any]:
        from edgepipe.stages.benchmark.measure import measure_all

        *given, reference = ctx.inputs
        runnable = [a for a in given if a.kind != ArtifactKind.REPORT]
        if reference.digest not in {a.digest for a in runnable}:
            runnable.insert(0, reference)
        verdicts = {
            a.meta.get("artifact_digest"): _verdict(a.meta)
            for a in given
            if a.kind == ArtifactKind.REPORT and a.meta.get("passed")
        }
        report = measure_all(spec, ctx, runnable, reference, verdicts)
        _write(report, spec, ctx)
        return {"rows": report["rows"], "environment": report["environment"]}


def _verdict(parity: dict[str, Any]) -> str:
    """ "passed", with a detector's, segmenter's or recogniser's headline metrics."""
    headline = parity.get("task_headline")
    return f"passed ({headline})" if headline else "passed"


def _write(report: dict[str, Any], spec: BenchmarkSpec, ctx: StageContext) -> None:
    from edgepipe.stages.benchmark.tables import (
        baseline_report,
        compare_to_baseline,
        markdown_table,
        write_plot,
    )

    table = markdown_table(report)
    (ctx.out_dir / "benchmark.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (ctx.out_dir / "benchmark.md").write_text(table + "\n")
    write_plot(report, ctx.out_dir / "benchmark.png")
    ctx.log.info("benchmark:\n%s", table)
    if spec.baseline is None:
        return
    baseline = baseline_report(json.loads(ctx.resolve(spec.baseline).read_text()), ctx.stage_id)
    if baseline is None:
        ctx.log.warning("the baseline has no rows of stage '%s': not compared", ctx.stage_id)
        return
    regressions, note = compare_to_baseline(report, baseline, spec.max_regression)
    if note:
        ctx.log.warning(note)
    if regressions:
        raise StageError("slower than the baseline: " + "; ".join(regressions) + "\n" + table)
