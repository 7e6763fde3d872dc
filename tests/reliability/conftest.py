"""Helpers for the reliability tests: a real service (replay camera, shipped model, ONNX Runtime)
built from a config, run for some frames, every verdict collected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge.app import build_service
from edge.config import LoadedConfig, parse_config
from edge.verdict import Verdict

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"
REFERENCE_MODEL = REPO / "models" / "pcb-ref-yolo11n-320.onnx"
DEMO_IMAGES = REPO / "edge" / "demo_data" / "images"
DEMO_REFERENCES = REPO / "edge" / "demo_data" / "references"


def service_config(
    tmp_path: Path,
    camera: dict[str, Any],
    *,
    model: Path = MODEL,
    sinks: list[dict[str, Any]] | None = None,
    budget_ms: float = 20_000,  # generous: these tests judge behaviour, not speed, on a loaded machine
    **top: Any,
) -> LoadedConfig:
    cam = {
        "type": "replay",
        "name": "cam",
        "rate_ppm": 0,
        "max_in_flight": 2,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    cam.update(camera)
    raw = {
        "cameras": [cam],
        "engine": {"type": "onnxruntime", "model": str(model), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": budget_ms, "ring_slots": 8},
        "sinks": sinks if sinks is not None else [{"type": "jsonl", "path": str(tmp_path / "v.jsonl")}],
        "metrics": {"port": 0},
        "state_dir": str(tmp_path / "state"),
        **top,
    }
    return parse_config(yaml.safe_dump(raw), "<reliability>", base_dir=tmp_path)


def run_service(
    cfg: LoadedConfig, max_frames: int | None, seconds: float = 120
) -> tuple[dict[str, Any], list[Verdict]]:
    """Run to `max_frames` (or the source's end, or `seconds`); the summary and every verdict."""
    service = build_service(cfg, max_frames=max_frames)
    got: list[Verdict] = []
    service.pipeline.subscribe(lambda v, _frame: got.append(v), "reliability-test")
    service.start(serve_metrics=False)
    try:
        service.pipeline.wait(seconds)
    finally:
        summary = service.stop()
    return summary, got


def board_image(seed: int = 0) -> np.ndarray:
    """A real demo board (grey), so that the model has something to judge."""
    files = sorted(DEMO_IMAGES.glob("*.jpg"))
    img = cv2.imread(str(files[seed % len(files)]), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    return img


def defective_board() -> Path:
    """A demo board under test (the '_test' images carry defects)."""
    found = sorted(DEMO_IMAGES.glob("*_test.jpg"))
    assert found, f"no defective demo boards in {DEMO_IMAGES}"
    return found[0]


@pytest.fixture(scope="session")
def model_file() -> Path:
    if not MODEL.is_file():
        pytest.fail(f"the shipped model {MODEL} is missing")
    return MODEL
