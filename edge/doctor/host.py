"""Host checks that need no config: Python, packages, GPU/CUDA/TensorRT, Jetson power mode."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

from edge.doctor.findings import Finding, Host, Level

DIST = "edge-inspect"
ENGINE_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


def check_python() -> list[Finding]:
    v = sys.version_info
    text = f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) < (3, 10):
        return [
            Finding(
                "python",
                "error",
                text + ": edge-inspect needs 3.10 or newer",
                "use the system Python 3.10 of JetPack 6 / Ubuntu 22.04, or newer",
            )
        ]
    return [Finding("python", "ok", text)]


def _requirements() -> list[str]:
    try:
        return [r for r in importlib.metadata.requires(DIST) or [] if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:
        return []


def _split_requirement(req: str) -> tuple[str, str]:
    """('numpy', '>=1.24') from 'numpy>=1.24; python_version >= "3.10"'."""
    spec = req.split(";", 1)[0].strip()
    m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", spec)
    return (m.group(1), m.group(3).strip()) if m else (spec, "")


def _satisfies(version: str, spec: str) -> bool | None:
    """Whether `version` meets `spec` (None if that cannot be judged without `packaging`)."""
    if not spec:
        return True
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return None
    try:
        return Version(version) in SpecifierSet(spec)
    except (InvalidSpecifier, InvalidVersion):
        return None


def check_packages() -> list[Finding]:
    """The runtime dependencies installed in versions the package asks for, and an engine runtime."""
    out: list[Finding] = []
    try:
        own = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return [
            Finding(
                "packages",
                "error",
                f"{DIST} is not installed in {sys.prefix}",
                "pip install -e '.[cpu]' in the checkout (or run deploy/jetson/install.sh)",
            )
        ]
    bad: list[str] = []
    fine: list[str] = []
    for req in _requirements():
        name, spec = _split_requirement(req)
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            bad.append(f"{name}{spec} is missing")
            continue
        if _satisfies(have, spec) is False:
            bad.append(f"{name} {have} does not meet {spec}")
        else:
            fine.append(f"{name} {have}")
    if bad:
        out.append(
            Finding(
                "packages",
                "error",
                f"{DIST} {own}: " + "; ".join(bad),
                f"{sys.executable} -m pip install -e '.[cpu]' (on Jetson: deploy/jetson/install.sh)",
            )
        )
    else:
        out.append(Finding("packages", "ok", f"{DIST} {own}: {len(fine)} runtime dependencies present"))
    engines = [r for r, mod in ENGINE_MODULES.items() if importlib.util.find_spec(mod) is not None]
    if not engines:
        out.append(
            Finding(
                "packages",
                "error",
                "no inference runtime installed (onnxruntime, openvino, tensorrt)",
                "pip install -e '.[cpu]' (ONNX Runtime + OpenVINO); on a GPU host also '.[gpu]'",
            )
        )
    else:
        versions = []
        for r in engines:
            try:
                versions.append(f"{r} {importlib.metadata.version(r)}")
            except importlib.metadata.PackageNotFoundError:  # JetPack's TensorRT: apt, not pip
                versions.append(f"{r} (system)")
        out.append(Finding("packages", "ok", "inference runtimes: " + ", ".join(versions)))
    if importlib.util.find_spec("torch") is not None:
        out.append(
            Finding(
                "packages",
                "warn",
                "torch is installed in the service's environment (not needed to run)",
                "keep torch in a separate training environment; the runtime never imports it",
            )
        )
    return out


def nvidia_gpus(host: Host) -> list[str]:
    """GPU names the NVIDIA driver shows (desktop: /proc/driver/nvidia/gpus; Jetson: the tegra GPU)."""
    names: list[str] = []
    gpus = host.proc_root / "driver" / "nvidia" / "gpus"
    if gpus.is_dir():
        for info in sorted(gpus.glob("*/information")):
            try:
                for line in info.read_text().splitlines():
                    if line.startswith("Model:"):
                        names.append(line.split(":", 1)[1].strip())
            except OSError:
                continue
    if not names and is_jetson(host):
        names.append(jetson_model(host) or "Jetson (integrated GPU)")
    return names


def is_jetson(host: Host) -> bool:
    return (host.etc_root / "nv_tegra_release").is_file()


def jetson_model(host: Host) -> str | None:
    try:
        return (host.proc_root / "device-tree" / "model").read_text().strip("\0\n ") or None
    except OSError:
        return None


def tensorrt_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt as trt

        return str(trt.__version__)
    except Exception:  # a broken install (missing libnvinfer): report as absent
        return None


def cuda_driver_version(host: Host) -> str | None:
    try:
        text = (host.proc_root / "driver" / "nvidia" / "version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+([0-9.]+)", text) or re.search(r"([0-9]+\.[0-9]+(?:\.[0-9]+)?)", text)
    return m.group(1) if m else None


def check_gpu(host: Host, need_tensorrt: bool) -> list[Finding]:
    """GPU, driver, TensorRT and pycuda: an error only when the config asks for TensorRT explicitly."""
    gpus = nvidia_gpus(host)
    trt = tensorrt_version()
    pycuda = importlib.util.find_spec("pycuda") is not None
    level_missing: Level = "error" if need_tensorrt else "ok"
    if not gpus:
        return [
            Finding(
                "gpu",
                level_missing,
                "no NVIDIA GPU visible: engines run on the CPU (engine type auto picks OpenVINO or ONNX Runtime)",
                "engine.type: tensorrt needs an NVIDIA GPU; use auto, openvino or onnxruntime here"
                if need_tensorrt
                else None,
            )
        ]
    driver = cuda_driver_version(host)
    out = [Finding("gpu", "ok", f"NVIDIA GPU: {', '.join(gpus)}" + (f" (driver {driver})" if driver else ""))]
    if trt is None:
        out.append(
            Finding(
                "tensorrt",
                "error" if need_tensorrt else "warn",
                "TensorRT is not importable: the GPU goes unused (CPU engines run instead)",
                "Jetson: sudo apt install python3-libnvinfer (JetPack) and a venv with "
                "--system-site-packages; x86: pip install -e '.[gpu]'",
            )
        )
    elif not pycuda:
        out.append(
            Finding(
                "tensorrt",
                "error" if need_tensorrt else "warn",
                f"TensorRT {trt} found but pycuda is not installed (the engine needs it)",
                "pip install pycuda (needs the CUDA toolkit headers: cuda-nvcc / cuda-cudart-dev)",
            )
        )
    else:
        out.append(Finding("tensorrt", "ok", f"TensorRT {trt} with pycuda"))
    return out


def check_jetson(host: Host) -> list[Finding]:
    """On a Jetson: the power mode (nvpmodel) should be the maximum one for a steady frame time."""
    if not is_jetson(host):
        return [Finding("jetson", "ok", "not a Jetson (no /etc/nv_tegra_release): no power mode to check")]
    model = jetson_model(host) or "Jetson"
    try:
        release = (host.etc_root / "nv_tegra_release").read_text().splitlines()[0].strip("# ")
    except (OSError, IndexError):
        release = "unknown L4T release"
    out = [Finding("jetson", "ok", f"{model}, {release}")]
    if "R36" not in release:
        out.append(
            Finding(
                "jetson",
                "warn",
                f"{release}: the installer and images target JetPack 6 (L4T r36)",
                "flash JetPack 6.x (L4T r36)",
            )
        )
    nvpmodel = shutil.which("nvpmodel")
    if nvpmodel is None:
        out.append(
            Finding(
                "jetson", "warn", "nvpmodel not found: cannot read the power mode", "sudo apt install nvidia-l4t-tools"
            )
        )
        return out
    try:
        text = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        out.append(Finding("jetson", "warn", f"nvpmodel -q failed: {exc}", "run edge-inspect doctor with sudo"))
        return out
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    mode = m.group(1) if m else text.strip().splitlines()[0] if text.strip() else "unknown"
    if "MAXN" in mode.upper():
        out.append(Finding("jetson", "ok", f"power mode {mode}"))
    else:
        out.append(
            Finding(
                "jetson",
                "warn",
                f"power mode {mode}: not the maximum, inference is slower and varies",
                "sudo nvpmodel -m 0 && sudo jetson_clocks (or enable edge-inspect-clocks.service)",
            )
        )
    return out


def free_bytes(path: Path) -> tuple[Path, int] | None:
    """(the nearest existing ancestor, free bytes for an unprivileged user there)."""
    p = path
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    try:
        return p, shutil.disk_usage(p).free
    except OSError:
        return None
