"""GPU, CUDA and TensorRT discovery, without importing torch, ONNX Runtime or TensorRT.

Two consumers: cache keys (an engine built on one GPU must never be served on another, so the
key of a ``build-trt-cache`` stage carries :func:`gpu_fingerprint`), and preflights
(:func:`gpu_problems` says in words why a GPU stage cannot run here, before anything runs).

Facts come from ``nvidia-smi`` (driver, GPU name, compute capability), from installed package
metadata and ONNX Runtime's ``capi/build_and_package_info.py`` (read as text: it records
``package_name`` and, for GPU builds, ``cuda_version``), and from ``ldconfig`` for a TensorRT
installed as system libraries. Only :func:`gpu_problems` imports ``onnxruntime`` (about 0.1 s):
whether a build has the CUDA/TensorRT providers is known only to the library itself.
"""

from __future__ import annotations

__all__ = [
    "gpu_available",
    "gpu_fingerprint",
    "gpu_problems",
    "list_gpus",
    "onnxruntime_build",
    "preload_libraries",
    "tensorrt_version",
]

import ctypes
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgepipe.env import distribution_version

_SMI_TIMEOUT_S = 10
_QUERY = ("name", "compute_cap", "driver_version", "uuid")
# pip distributions that ship libnvinfer (the "tensorrt" metapackage pulls one of these in)
_TRT_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-libs",
    "tensorrt-cu12-libs",
    "tensorrt-cu11-libs",
)


@functools.cache
def _smi(*args: str) -> tuple[str | None, str]:
    """(stdout, error) of ``nvidia-smi ARGS``; stdout is None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "nvidia-smi not found"
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()
        return None, f"nvidia-smi failed: {first[0] if first else f'exit {done.returncode}'}"
    return done.stdout, ""


def _gpu_rows() -> tuple[list[dict[str, str | None]], str]:
    """(GPUs in nvidia-smi's PCI order, error); the error is "" when nvidia-smi answered."""
    text, error = _smi(f"--query-gpu={','.join(_QUERY)}", "--format=csv,noheader")
    fields = _QUERY
    if text is None and shutil.which("nvidia-smi"):  # drivers before ~510 lack compute_cap
        fields = ("name", "driver_version", "uuid")
        text, error = _smi(f"--query-gpu={','.join(fields)}", "--format=csv,noheader")
    gpus = []
    for line in (text or "").strip().splitlines():
        row = dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
        gpus.append({k: None if row.get(k) in (None, "[N/A]", "") else row[k] for k in _QUERY})
    return gpus, error


def list_gpus() -> list[dict[str, str | None]]:
    """Every GPU ``nvidia-smi`` sees, in its (PCI bus) order; empty without a driver."""
    return _gpu_rows()[0]


def _physical_index(device_id: int, gpus: list[dict[str, str | None]]) -> int | None:
    """The nvidia-smi row CUDA calls ``device_id``, honouring ``CUDA_VISIBLE_DEVICES``.

    Assumes CUDA enumerates in PCI order (as nvidia-smi does): set CUDA_DEVICE_ORDER=PCI_BUS_ID
    on machines with mixed GPU models.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # set but empty hides every GPU
        return device_id if device_id < len(gpus) else None
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if device_id >= len(entries):
        return None
    entry = entries[device_id]
    if entry.isdigit():
        return int(entry) if int(entry) < len(gpus) else None
    matches = [i for i, g in enumerate(gpus) if g["uuid"] and g["uuid"].startswith(entry)]
    return matches[0] if matches else None


@functools.cache
def _driver_cuda_version() -> str | None:
    """Highest CUDA version the driver supports (nvidia-smi's "CUDA Version" header)."""
    text, _ = _smi()
    found = re.search(r"CUDA Version:\s*([\d.]+)", text or "")
    return found.group(1) if found else None


def onnxruntime_build() -> dict[str, str | None]:
    """Which build provides the ``onnxruntime`` module, read without importing it.

    Returns:
        ``package`` ("onnxruntime" is the CPU build, "onnxruntime-gpu" the CUDA one),
        ``version`` and ``cuda_version`` (None for builds without CUDA); all None when absent.
    """
    spec = importlib.util.find_spec("onnxruntime")
    info: dict[str, str | None] = {"package": None, "version": None, "cuda_version": None}
    if spec is None or not spec.submodule_search_locations:
        return info
    path = Path(next(iter(spec.submodule_search_locations))) / "capi/build_and_package_info.py"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return info
    for key, field in (("package", "package_name"), ("version", "__version__")):
        found = re.search(rf"^{field}\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        info[key] = found.group(1) if found else None
    found = re.search(r"^cuda_version\s*=\s*['\"]([^'\"]*)['\"]", text, re.M)
    info["cuda_version"] = found.group(1) if found and found.group(1) else None
    return info


@functools.cache
def tensorrt_version() -> str | None:
    """Installed TensorRT: pip distribution metadata, else the system libnvinfer's file name."""
    for name in _TRT_DISTRIBUTIONS:
        if version := distribution_version(name):
            return version
    ldconfig = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if ldconfig is None:
        return None
    try:
        listing = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=_SMI_TIMEOUT_S, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in listing.splitlines():
        if "libnvinfer.so" in line and "=>" in line:
            real = os.path.realpath(line.split("=>", 1)[1].strip())
            found = re.search(r"libnvinfer\.so\.(\d+(?:\.\d+)*)$", real)
            if found:
                return found.group(1)
    return None


def gpu_fingerprint(device_id: int = 0) -> dict[str, Any] | None:
    """Facts that make a TensorRT engine valid only where it was built; None without a GPU.

    Keys: ``name``, ``compute_capability``, ``driver``, ``cuda_driver`` (what the driver
    supports), ``cuda_runtime`` (the CUDA onnxruntime-gpu was built with), ``tensorrt``.
    """
    gpus = list_gpus()
    index = _physical_index(device_id, gpus)
    if index is None:
        return None
    gpu = gpus[index]
    return {
        "name": gpu["name"],
        "compute_capability": gpu["compute_cap"],
        "driver": gpu["driver_version"],
        "cuda_driver": _driver_cuda_version(),
        "cuda_runtime": onnxruntime_build()["cuda_version"],
        "tensorrt": tensorrt_version(),
    }


@functools.cache
def preload_libraries() -> None:
    """Load pip-installed CUDA/cuDNN and TensorRT libraries, which sit off the loader's path, so
    ONNX Runtime's providers find them: ``onnxruntime.preload_dlls()`` (ORT >= 1.21) and
    ``tensorrt_libs``' libnvinfer*, loaded RTLD_GLOBAL (as onnx-asr's TensorRT recipe does)."""
    import onnxruntime

    if hasattr(onnxruntime, "preload_dlls"):
        onnxruntime.preload_dlls()
    spec = importlib.util.find_spec("tensorrt_libs")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for pattern in ("libnvinfer.so.*", "libnvinfer_plugin.so.*", "libnvonnxparser.so.*"):
            for library in sorted(Path(folder).glob(pattern)):
                ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def _cuda_major() -> str:
    cuda = onnxruntime_build()["cuda_version"]
    return cuda.split(".")[0] if cuda else "12"


def _onnxruntime_problems(need_tensorrt: bool) -> list[str]:
    build = onnxruntime_build()
    if build["package"] is None:
        return ["onnxruntime-gpu is not installed: pip install onnxruntime-gpu"]
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    problems = []
    if "CUDAExecutionProvider" not in providers:
        if build["package"] == "onnxruntime":
            problems.append(
                "onnxruntime has no CUDAExecutionProvider: the CPU build 'onnxruntime' is "
                "installed; pip uninstall onnxruntime && pip install onnxruntime-gpu"
            )
        else:
            problems.append(
                f"onnxruntime has no CUDAExecutionProvider ({build['package']} "
                f"{build['version']}, providers: {', '.join(providers)}): "
                "pip install onnxruntime-gpu"
            )
    elif distribution_version("onnxruntime") and distribution_version("onnxruntime-gpu"):
        problems.append(
            "both onnxruntime and onnxruntime-gpu are installed and share one module: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    gpu_build = "CUDAExecutionProvider" in providers
    if need_tensorrt and gpu_build and "TensorrtExecutionProvider" not in providers:
        problems.append(
            f"{build['package']} {build['version']} has no TensorrtExecutionProvider: "
            "install an onnxruntime-gpu build with TensorRT (the PyPI wheel has it)"
        )
    return problems


def gpu_problems(need_tensorrt: bool, device_id: int = 0) -> list[str]:
    """Readable reasons why a GPU stage cannot run here (empty: it can).

    Args:
        need_tensorrt: Also require ONNX Runtime's TensorRT provider and TensorRT's libraries.
        device_id: The CUDA device the stage will use.
    """
    problems = []
    gpus, smi_error = _gpu_rows()
    if smi_error:
        problems.append(f"no NVIDIA GPU/driver ({smi_error})")
    elif _physical_index(device_id, gpus) is None:
        problems.append(f"device_id {device_id} does not exist: {len(gpus)} GPU(s) visible")
    problems += _onnxruntime_problems(need_tensorrt)
    if need_tensorrt and tensorrt_version() is None:
        major = _cuda_major()
        problems.append(
            "TensorrtExecutionProvider cannot load: TensorRT libraries not installed "
            f"(no tensorrt package, no libnvinfer): pip install tensorrt-cu{major}"
        )
    return problems


def gpu_available(need_tensorrt: bool = False) -> bool:
    """Whether a CUDA (and optionally TensorRT) run of ONNX Runtime is possible here."""
    return not gpu_problems(need_tensorrt)
