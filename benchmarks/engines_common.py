"""What every row of the engines benchmark shares: the `Bench` record, the frames, and one
engine's timed block (`benchmarks/engines.py` drives the rounds)."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "build" / "datasets" / "deeppcb" / "data.yaml"
WORK = REPO / "build" / "bench"

Row = tuple[float, float, int]  # (full ms, inference ms, detections) of one frame


@dataclass
class Bench:
    """One engine under test: `step(frame) -> (full_ms, infer_ms, detections)`."""

    name: str
    kind: str  # "ours" or "ultralytics"
    runtime: str
    model: str
    step: Callable[[np.ndarray], Row]
    close: Callable[[], None]
    notes: dict[str, Any] = field(default_factory=dict)
    inspector: Any = None  # ours: the service's `Inspector` (preprocess, engine, decode, rules)
    worker: Any = None  # ours in its own process (a process-wide setting such as max_cpu_isa)
    full: list[float] = field(default_factory=list)
    infer: list[float] = field(default_factory=list)
    dets: list[int] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)


def warm_up(b: Bench, frames: list[np.ndarray], count: int) -> Bench:
    """`count` untimed frames through `b`."""
    for i in range(count):
        b.step(frames[i % len(frames)])
    return b


def run_block(make: Callable[[], Bench], kept: Bench | None, frames: list[np.ndarray], warmup: int) -> list[Row]:
    """One engine's block of a round: every frame through `kept`, or through a fresh, warmed-up
    `make()` that is closed after it (--reload)."""
    live = kept if kept is not None else warm_up(make(), frames, warmup)
    rows = [live.step(frame) for frame in frames]
    if kept is None:
        live.close()
    return rows


def load_frames(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    """`--images` frames spread over `--frames` (default: DeepPCB val, else the demo images), BGR or mono."""
    from cameras.labels import IMAGE_SUFFIXES

    val = DEFAULT_DATA.parent / "images" / "val"
    folder = args.frames or (val if val.is_dir() else REPO / "edge" / "demo_data" / "images")
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {folder}")
    idx = np.unique(np.linspace(0, len(files) - 1, min(args.images, len(files))).round().astype(int))
    frames = []
    flag = cv2.IMREAD_GRAYSCALE if args.color == "mono" else cv2.IMREAD_COLOR
    for i in idx:
        frame = cv2.imread(str(files[int(i)]), flag)
        if frame is None:
            raise SystemExit(f"cannot read {files[int(i)]}")
        frames.append(frame)
    return frames, str(folder)


def convert(frame: np.ndarray, color: str) -> np.ndarray:
    """The frame as mono (2-D) or BGR."""
    if color == "mono":
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for mod in ("onnxruntime", "openvino", "nncf", "ultralytics", "torch", "tensorrt"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", None) or m.get_version())
        except Exception:
            pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
