"""ONNX Runtime back end of the ``quantize`` stage: static/dynamic INT8 and FP16 candidates.

A composed model (preprocessing in the graph) is split first: only its network is quantized
or down-cast, and the untouched float preprocessing is joined back (``network_split``).
Calibration ranges are cached per method in the scratch folder (ORT's own
``calibration_cache_path``), so that recovery candidates which differ in per-channel or
excluded nodes do not calibrate again, and they are collected in strides, so memory does not
grow with the number of calibration samples.
"""

from __future__ import annotations

__all__ = ["OrtBackend"]

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.onnx_io import ONNX_FILE, describe_onnx
from edgepipe.stages.base import Artifact, ArtifactKind, StageContext
from edgepipe.stages.quantize.calibration import calibration_samples
from edgepipe.stages.quantize.network_split import (
    NETWORK_INPUT,
    is_composed,
    join_network,
    split_composed,
)

_STATIC_OPS = ["Conv", "MatMul", "Gemm"]
# Dynamic Conv becomes ConvInteger, ~3x slower than fp32 (MEASUREMENTS #3): leave it float.
_DYNAMIC_OPS = ["MatMul", "Gemm"]
_STRIDE = 16  # calibration samples collected at once (ORT keeps every activation of a stride)


class OrtBackend:
    """Builds candidates from one ONNX input: ``build(settings, out_dir)`` writes ``model.onnx``.

    Settings are plain JSON (recorded in the artifact and the lockfile): ``mode`` (static,
    dynamic, fp16) and, for INT8, ``calibrate_method``, ``per_channel``, ``exclude_nodes``.
    """

    kind = "onnx-model"
    output_kind = ArtifactKind.ONNX_MODEL
    has_fp16 = True

    def __init__(self, spec, source: Artifact, ctx: StageContext):
        self.spec, self.source, self.ctx = spec, source, ctx
        self.scratch = ctx.out_dir / "_scratch"
        self.scratch.mkdir(exist_ok=True)
        self.external = bool(source.meta.get("external_data"))
        self.split = None
        network = source.path / ONNX_FILE
        if is_composed(source.meta):
            self.split = split_composed(source.path, source.meta, self.scratch, self.external)
            network = self.split.network
        self.network = network
        self._work: Path | None = None
        self._samples: list[Any] | None = None

    def configured(self) -> dict[str, Any]:
        """The settings the recipe asks for."""
        options = self.spec.onnxruntime
        if self.spec.mode == "fp16":
            return {"mode": "fp16"}
        settings = {"mode": self.spec.mode, "per_channel": options.per_channel}
        if self.spec.mode == "static":
            settings["calibrate_method"] = options.calibrate_method
        return {**settings, "exclude_nodes": list(options.exclude_nodes)}

    def build(self, settings: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        """Write the candidate's ``model.onnx`` into ``out_dir``; return its artifact meta."""
        out_dir.mkdir(parents=True, exist_ok=True)
        network_out = self.scratch / f"{out_dir.name}.onnx" if self.split else out_dir / ONNX_FILE
        try:
            if settings["mode"] == "fp16":
                self._to_fp16(network_out)
            elif settings["mode"] == "static":
                self._static(network_out, settings)
            else:
                self._dynamic(network_out, settings)
            if self.split:
                join_network(self.split, network_out, out_dir / ONNX_FILE, self.external)
        except StageError:
            raise
        except Exception as exc:  # ORT raises RuntimeError/ValueError/onnx errors for bad graphs
            raise StageError(
                f"ONNX Runtime quantization failed: {summarize_exception(exc)}"
            ) from None
        _clean_leftovers(out_dir)
        quantization: dict[str, Any] = {"backend": "onnxruntime", "settings": settings}
        if settings["mode"] != "fp16":
            default = _STATIC_OPS if settings["mode"] == "static" else _DYNAMIC_OPS
            quantization["op_types"] = self.spec.onnxruntime.op_types or default
        return {
            **self.source.meta,
            **describe_onnx(out_dir / ONNX_FILE),
            "precision": "fp16" if settings["mode"] == "fp16" else "int8",
            "quantization": quantization,
        }

    def calibration(self) -> list[Any]:
        """The network's calibration inputs (a composed model's raw frames, preprocessed)."""
        if self._samples is None:
            raw = calibration_samples(
                self.spec.calibration, self.source.meta, self.ctx.recipe_dir, self.ctx.log
            )
            self._samples = self._through_preprocessing(raw) if self.split else raw
        return self._samples

    def network_input(self) -> str:
        return NETWORK_INPUT if self.split else _input_name(self.network)

    def pre_processed(self) -> Path:
        """ORT's recommended first step: symbolic shape inference + graph optimisation."""
        if self._work is not None:
            return self._work
        self._work = self.network
        if not self.spec.onnxruntime.pre_process:
            return self._work
        from onnxruntime.quantization.shape_inference import quant_pre_process

        work = self.scratch / "pre.onnx"
        try:
            quant_pre_process(
                str(self.network),
                str(work),
                save_as_external_data=self.external,
                external_data_location="pre.onnx.data" if self.external else None,
            )
        except Exception as exc:  # symbolic shape inference fails on some graphs: fall back
            self.ctx.log.warning(
                "quant_pre_process failed (%s); quantizing the model as is",
                summarize_exception(exc, 200),
            )
            return self._work
        self._work = work
        return work

    def _static(self, target: Path, settings: dict[str, Any]) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        options, work = self.spec.onnxruntime, self.pre_processed()
        method = settings["calibrate_method"]
        cache = self.scratch / f"ranges-{method}.json"
        reader = None if cache.is_file() else _Reader(self.network_input(), self.calibration())
        quantize_static(
            str(work),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ if options.format == "QDQ" else QuantFormat.QOperator,
            op_types_to_quantize=options.op_types or _STATIC_OPS,
            per_channel=settings["per_channel"],
            reduce_range=options.reduce_range,
            activation_type=_qtype(options.activation_type),
            weight_type=_qtype(options.weight_type),
            nodes_to_exclude=settings["exclude_nodes"] or None,
            use_external_data_format=self.external,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[method],
            calibration_cache_path=str(cache),
            extra_options={"CalibStridedMinMax": reader.stride} if reader else {},
        )

    def _dynamic(self, target: Path, settings: dict[str, Any]) -> None:
        from onnxruntime.quantization import quantize_dynamic

        options, work = self.spec.onnxruntime, self.pre_processed()
        op_types = options.op_types or _DYNAMIC_OPS
        _warn_about_convs(_op_counts(work), op_types, self.ctx.log)
        quantize_dynamic(
            str(work),
            str(target),
            op_types_to_quantize=op_types,
            per_channel=settings["per_channel"],
            reduce_range=options.reduce_range,
            weight_type=_qtype(options.weight_type),
            nodes_to_exclude=settings["exclude_nodes"] or None,
            use_external_data_format=self.external,
        )

    def _to_fp16(self, target: Path) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # a composed model's network keeps float32 I/O: its preprocessing feeds float32
        keep_io_types = self.spec.keep_io_types or self.split is not None
        model = convert_float_to_float16(onnx.load(str(self.network)), keep_io_types=keep_io_types)
        onnx.save(
            model,
            str(target),
            save_as_external_data=self.external,
            location=f"{target.name}.data" if self.external else None,
        )

    def sensitive_nodes(self, tried, samples: list[Any]) -> list[tuple[str, float]]:
        """(node, dB lost) of a QDQ candidate's quantized nodes, most costly first."""
        from edgepipe.stages.quantize.ort_sensitivity import sensitive_nodes

        if self.spec.onnxruntime.format != "QDQ":  # QOperator graphs hide the activations
            return []
        built = (
            self.scratch / f"{tried.folder.name}.onnx" if self.split else tried.folder / ONNX_FILE
        )
        op_types = self.spec.onnxruntime.op_types or _STATIC_OPS
        return sensitive_nodes(
            self.pre_processed(), built, self.network_input(), samples, self.scratch, op_types
        )

    def _through_preprocessing(self, frames: list[Any]) -> list[Any]:
        """Raw frames → the tensors the network sees, by the composed model's own
        preprocessing (run in ONNX Runtime, exactly as it runs when deployed)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            self.split.preprocessing.SerializeToString(), options, ["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        return [session.run(None, {name: frame})[0] for frame in frames]

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


class _Reader:
    """ORT CalibrationDataReader over precomputed samples, read in strides (``set_range``)."""

    def __init__(self, name: str, samples: list[Any]):
        self.name, self.samples = name, samples
        # strided collection needs a stride that divides the sample count
        self.stride = max(s for s in range(1, _STRIDE + 1) if len(samples) % s == 0)
        self._range = iter(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = iter(self.samples[start_index:end_index])

    def get_next(self) -> dict[str, Any] | None:
        sample = next(self._range, None)
        return None if sample is None else {self.name: sample}

    def rewind(self) -> None:  # pragma: no cover - part of ORT's reader protocol
        self._range = iter(self.samples)


def _input_name(model: Path) -> str:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _op_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _warn_about_convs(ops: Counter, op_types: list[str], log) -> None:
    convs = ops["Conv"]
    if "Conv" in op_types and convs:
        log.warning(
            "dynamic quantization of %d Conv nodes produces ConvInteger, typically "
            "~3x slower than fp32 on CPU; use mode: static for conv nets",
            convs,
        )
    elif convs and convs >= ops["MatMul"] + ops["Gemm"]:
        log.warning(
            "this graph is conv-heavy (%d Conv): dynamic mode leaves them float and "
            "gains little; mode: static quantizes them",
            convs,
        )


def _clean_leftovers(out_dir: Path) -> None:
    for leftover in out_dir.glob("*.onnx-*"):  # ORT's augmented calibration models
        leftover.unlink()
