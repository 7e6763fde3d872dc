"""What this host offers the engines: installed runtimes, an NVIDIA GPU, CPU flags, and the
oneDNN instruction-set cap for OpenVINO's CPU plugin (`ONEDNN_MAX_CPU_ISA`).

Runtimes, GPU and CPU flags are what the `auto` engine probes and keys its cached choice by
(`runtime_installed`, `runtime_version`, `cuda_gpu_present`, `cpu_flags_hash`).

The cap. Why an engine would set it: on a CPU with AMX, OpenVINO runs an INT8 model's convolutions in
AMX kernels, and with a SiLU fused into them (every Ultralytics YOLO) those were SLOWER than the
AVX-512 VNNI kernels the same model gets with AMX left out: the shipped YOLO11n at 320 on a
2-core Xeon with AMX, inference alone, three separate runs each: 1 thread 13-18 ms with AMX,
9-14 ms without; 2 threads 7-9 ms and 5-7 ms (`benchmarks/engines.py` gives full-path figures).
With ReLU instead of SiLU the AMX kernels are the faster ones (2 threads: 4.3 against 5.6 ms):
the cost is the fused SiLU, see models/yolo11n-relu.yaml. FP32 never uses AMX; bf16 needs it.

oneDNN offers no per-model switch: the cap is an environment variable, read ONCE per process,
when OpenVINO compiles its first model for the CPU. So it is a process-wide setting, and this
module makes it safe to ask for from an engine config:

- `apply_cap` sets it before the engine compiles, and refuses a cap that disagrees with one
  already in the environment (`ONEDNN_MAX_CPU_ISA` or its old name `DNNL_MAX_CPU_ISA`);
- `kernels` reads the compiled model's runtime graph (which kernel runs each layer), and
  `kernels_over_cap` finds those of an instruction set above the cap: a model compiled in this
  process before the cap was set fixed the ISA already, and the engine says so instead of
  silently running uncapped.

Reads /proc, package metadata and compiled models; writes only `apply_cap`'s os.environ entry.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from edge.errors import EngineError

CpuIsaCap = Literal[
    "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_fp16"
]
ENV = "ONEDNN_MAX_CPU_ISA"
OLD_ENV = "DNNL_MAX_CPU_ISA"

# -- runtimes, GPU, CPU flags: the module each runtime imports, the pip distributions that ship it
_MODULES: dict[str, str] = {"tensorrt": "tensorrt", "openvino": "openvino", "onnxruntime": "onnxruntime"}
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
    "openvino": ("openvino",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
}


def runtime_installed(runtime: str) -> bool:
    """The runtime's Python module is importable (found without importing it)."""
    return importlib.util.find_spec(_MODULES[runtime]) is not None


def runtime_version(runtime: str) -> str:
    """'<distribution>==<version>' of a runtime, for the auto engine's cache key."""
    for dist in _DISTRIBUTIONS.get(runtime, ()):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    try:  # e.g. TensorRT from JetPack's apt packages: no pip metadata
        module = importlib.import_module(_MODULES[runtime])
        return f"{runtime}=={getattr(module, '__version__', 'unknown')}"
    except ImportError:
        return f"{runtime}==unknown"


def cuda_gpu_present() -> bool:
    """An NVIDIA GPU (desktop driver or Jetson) is visible to this process."""
    if Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl-gpu").exists():
        return True
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def cpu_flags() -> list[str]:
    """The CPU feature flags ('flags', or 'Features' on ARM) from /proc/cpuinfo, sorted; [] if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return sorted(value.split())
    except OSError:
        pass
    return []


def cpu_flags_hash() -> str:
    """sha256 (16 hex) of the CPU feature flags (of the machine and processor names where unknown)."""
    text = " ".join(cpu_flags())
    if not text:
        import platform

        text = f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the oneDNN cap ----------------------------------------------------------------------------
# layers whose kernel name tells the ISA (the rest are reorders, element-wise, reshapes)
_COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "Deconvolution")

CAP_HELP = (
    "Highest instruction set OpenVINO's CPU kernels may use (oneDNN's ONEDNN_MAX_CPU_ISA), e.g. "
    "avx512_core_bf16 to keep an INT8 model off AMX, which was slower on a small model (see "
    "edge/engines/host.py). Process-wide and read once: it must be set before the first "
    "OpenVINO CPU model of the process is compiled; the engine checks the kernels it got and "
    "fails if the cap did not take. Unset: oneDNN's own choice (everything the CPU has)."
)


def _forbidden(cap: str) -> tuple[str, ...]:
    """Kernel-name parts that mean an instruction set above `cap`."""
    return ("amx",) if cap.startswith("avx512") else ("avx512", "amx")


def current_cap() -> str:
    """The cap in the environment (`ONEDNN_MAX_CPU_ISA`, else `DNNL_MAX_CPU_ISA`), or '' where none is."""
    return os.environ.get(ENV) or os.environ.get(OLD_ENV) or ""


def apply_cap(cap: str) -> None:
    """Put `cap` in the environment for oneDNN; EngineError where a different cap is already set."""
    want = cap.upper()
    for name in (ENV, OLD_ENV):
        have = os.environ.get(name)
        if have and have.upper() != want:
            raise EngineError(
                f"max_cpu_isa {cap!r} conflicts with {name}={have} in the environment "
                "(one cap per process: unset one of them)"
            )
    os.environ[ENV] = want


def kernels(compiled: Any) -> Counter[str]:
    """How many compute layers (convolutions, matmuls) of an OpenVINO compiled model run each kernel."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt or "primitiveType" not in rt:
            continue
        if str(rt["layerType"].astype(str)) in _COMPUTE_LAYERS:
            counts[str(rt["primitiveType"].astype(str))] += 1
    return counts


def kernels_over_cap(counts: Mapping[str, int], cap: str) -> list[str]:
    """The kernels in `counts` of an instruction set above `cap` (sorted)."""
    bad = _forbidden(cap)
    return sorted(k for k in counts if any(part in k.lower() for part in bad))


def check_cap(counts: Mapping[str, int], cap: str, what: str) -> None:
    """EngineError naming the kernels above `cap`, where the cap did not take effect."""
    over = kernels_over_cap(counts, cap)
    if over:
        raise EngineError(
            f"{what}: max_cpu_isa {cap!r} did not take effect (kernels {', '.join(over)}): OpenVINO had "
            "already compiled a CPU model in this process, which fixed the instruction set. Set the cap "
            f"for the first OpenVINO engine of the process, or {ENV}={cap.upper()} before it starts"
        )


def summary(counts: Mapping[str, int]) -> str:
    """'brgconv_avx512_I8 x35, ...', most used first: for the load log."""
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
