"""CPU ceiling: how much faster than torch eager can *any* INT8 artifact of a model be here?

    .venv/bin/python benchmarks/cpu_ceiling.py [--model resnet50] [--threads 2]

A quantized CNN at batch 1 is bound by the CPU's INT8 multiply-accumulate rate, and torch
eager by its FP32 rate. This measures both peaks with large matrix products (torch FP32 and
BF16; ONNX Runtime's u8×s8 MatMulInteger, which uses VNNI/AMX kernels) and what torch eager
reaches on the model, then prints the speedup an INT8 artifact could reach if it ran every
multiply-accumulate at the measured INT8 peak (it cannot quite: memory traffic, the first
convolution and the pooling layers stay). On CPUs with AMX (Sapphire Rapids and later)
the INT8 peak is an order of magnitude above FP32; with AVX-512 VNNI alone it is not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import table

from edgepipe.env import cpu_model

SIZE = 2048  # large enough that every kernel runs at its peak, small enough to take seconds


def _rate(run, operations: float, seconds: float = 2.0) -> float:
    """Operations per second of ``run()``, best of repeated calls over ``seconds``."""
    for _ in range(3):
        run()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return operations / best


def _torch_gemm(dtype: torch.dtype) -> float:
    a, b = torch.randn(SIZE, SIZE, dtype=dtype), torch.randn(SIZE, SIZE, dtype=dtype)
    return _rate(lambda: a @ b, 2 * SIZE**3)


def _ort_int8_gemm(threads: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).integers(-127, 127, (SIZE, SIZE), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [SIZE, SIZE])],
        [numpy_helper.from_array(weights, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    a = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)
    return _rate(lambda: session.run(None, {"a": a}), 2 * SIZE**3)


def _model_eager(name: str) -> tuple[float, float]:
    """(FLOPs per image, torch eager FLOP/s at batch 1) for a timm model, random weights."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops = counter.get_total_flops()
        return flops, _rate(lambda: model(x), flops, seconds=5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fp32, bf16 = _torch_gemm(torch.float32), _torch_gemm(torch.bfloat16)
    int8 = _ort_int8_gemm(args.threads)
    flops, eager = _model_eager(args.model)
    ceiling = int8 / eager
    print(f"{cpu_model()}, {args.threads} threads\n")
    rows = [
        [f"torch FP32 GEMM {SIZE}³", f"{fp32 / 1e9:.0f}", "1.0×"],
        [f"torch BF16 GEMM {SIZE}³", f"{bf16 / 1e9:.0f}", f"{bf16 / fp32:.1f}×"],
        [f"ORT INT8 MatMulInteger {SIZE}³", f"{int8 / 1e9:.0f}", f"{int8 / fp32:.1f}×"],
        [f"{args.model} torch eager, batch 1", f"{eager / 1e9:.0f}", f"{eager / fp32:.2f}×"],
    ]
    print(table(["measurement", "G(FL)OP/s", "vs FP32 GEMM"], rows))
    eager_ms = flops / eager * 1e3
    print(
        f"\n{args.model}: {flops / 1e9:.1f} GFLOP per image; torch eager {eager_ms:.1f} ms."
        f"\nAn INT8 artifact running every multiply-accumulate at the INT8 GEMM peak would take"
        f" {flops / int8 * 1e3:.2f} ms: at most {ceiling:.1f}× torch eager on this CPU."
        f"\n8× would need {eager_ms / 8:.2f} ms, {8 * eager / 1e9:.0f} GOP/s sustained"
        f" ({8 * eager / int8:.0%} of the INT8 GEMM peak)."
    )


if __name__ == "__main__":
    main()
