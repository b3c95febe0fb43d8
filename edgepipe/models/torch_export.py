"""torch.export and what is built from its programs: an AOTInductor package (``.pt2``) and an
ExecuTorch program lowered to XNNPACK (``.pte``). export-aoti, export-executorch and the
quantize stage's PT2E back end all build through here, so their errors read alike."""

from __future__ import annotations

__all__ = [
    "check_faithful",
    "compile_aoti",
    "rewrite_archive",
    "example_batch",
    "export_program",
    "lower_executorch",
]

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepipe.errors import StageError, summarize_exception
from edgepipe.models.torch_model import output_tensors


def example_batch(meta: dict[str, Any], batch: int) -> Any:
    """A fixed random batch of the model's input size (exports trace shapes, not values)."""
    import torch

    size = meta["data_config"]["input_size"]
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def export_program(module: Any, example: Any, max_batch: int | None = None) -> Any:
    """``torch.export`` of ``module`` on ``example``; with ``max_batch`` the batch is dynamic
    (1..max_batch), so ``example`` must have a batch above 1 or torch.export specialises it."""
    import torch

    shapes = None
    if max_batch is not None:
        shapes = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    try:
        with torch.no_grad():
            return torch.export.export(module, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises UserError, GuardOnDataDependent…
        raise StageError(
            f"torch.export failed: {summarize_exception(exc)}. A model with Python control flow "
            "that depends on its input cannot be exported; try export-torchscript or export"
        ) from None


def compile_aoti(program: Any, target: Path, freezing: bool = False) -> None:
    """Compile ``program`` into an AOTInductor package at ``target``. ``freezing`` folds the
    weights into constants: what lets Inductor fuse a PT2E INT8 graph's quantize/dequantize
    pairs into int8 kernels (its documented x86 INT8 path)."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        compiled = Path(scratch) / target.name  # the archive's folder is named after the file
        try:
            with torch.no_grad():
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(compiled), inductor_configs={"freezing": freezing}
                )
        except Exception as exc:  # a C++ compiler missing or failing, an unsupported op
            raise StageError(
                f"AOTInductor could not compile the model: {summarize_exception(exc)} "
                "(it needs a C++ compiler, e.g. g++, on PATH)"
            ) from None
        _repackage(compiled, target)


# Records torch's stream writer adds by itself when an archive is finished
_WRITER_RECORDS = {".data/serialization_id", ".data/version", "version", "byteorder"}
_BUILD_COMMANDS = b"\n// Compile cmd\n"


def rewrite_archive(source: Path, target: Path, record: Callable[[str, bytes], bytes | None]):
    """Copy a torch zip archive (TorchScript, AOTInductor package) record by record through
    ``record(name, data)`` (None drops the record), with torch's own stream writer. Its
    serialization id is a hash of the records: the same records give the same bytes."""
    import torch

    reader = torch._C.PyTorchFileReader(str(source))
    writer = torch._C.PyTorchFileWriter(str(target))
    for name in reader.get_all_records():
        if name in _WRITER_RECORDS:
            continue
        data = record(name, bytes(reader.get_record(name)))
        if data is not None:
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def _repackage(source: Path, target: Path) -> None:
    """The package with its C++ sources' trailing "// Compile cmd" / "// Link cmd" comments
    cut: Inductor writes them only when it compiled (not on a cache hit), with temporary paths
    in them, so the same compiled code came in packages of other bytes."""

    def without_build_commands(name: str, data: bytes) -> bytes:
        if not name.endswith(".cpp"):
            return data
        return data.split(_BUILD_COMMANDS, 1)[0].rstrip(b"\n") + b"\n"

    rewrite_archive(source, target, without_build_commands)


def lower_executorch(program: Any, target: Path) -> dict[str, int]:
    """Lower ``program`` to an ExecuTorch ``.pte`` with XNNPACK taking what it supports; the
    rest runs on ExecuTorch's portable kernels. Returns how many nodes each side got."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        executorch_program = lowered.to_executorch()
    except Exception as exc:  # an op without an edge/portable kernel, a partitioner failure
        raise StageError(
            f"ExecuTorch could not lower the model: {summarize_exception(exc)}"
        ) from None
    target.write_bytes(executorch_program.buffer)
    return _delegation(lowered.exported_program().graph_module)


def _delegation(graph_module: Any) -> dict[str, int]:
    """Delegated XNNPACK subgraphs, and the compute nodes left to the portable kernels."""
    delegated = portable = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif not name.startswith(("getitem", "alloc", "view_copy", "_to_dim_order")):
            portable += 1
    return {"xnnpack_subgraphs": delegated, "portable_nodes": portable}


def check_faithful(module: Any, runner: Any, batch: Any, rtol: float, what: str) -> float:
    """Largest difference between ``runner`` and eager ``module`` on ``batch``; a StageError
    when it exceeds ``rtol`` of the largest reference output."""
    import torch

    with torch.no_grad():
        expected = output_tensors(module(batch))
        actual = output_tensors(runner(batch))
    worst = max(float((a - e).abs().max()) for a, e in zip(actual, expected, strict=True))
    scale = max(float(e.abs().max()) for e in expected) or 1.0
    if worst > rtol * scale:
        raise StageError(
            f"the {what} differs from eager by {worst:.3g} (largest output {scale:.3g}): "
            "not a faithful compilation"
        )
    return worst
