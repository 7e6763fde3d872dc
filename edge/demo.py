"""The demo: the whole pipeline on the bundled PCB images and the shipped model."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.config import LoadedConfig, parse_config
from edge.engines.model import read_model_info
from edge.errors import ConfigError

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "pcb-ref-yolo11n-320.onnx"  # golden-reference model; the frame-only one: pcb-yolo11n-320.onnx


def default_model() -> Path:
    path = MODELS_DIR / DEFAULT_MODEL
    if not path.is_file():
        raise ConfigError(f"the shipped model {path} is missing; pass --model PATH")
    return path


def demo_config_dict(
    out_dir: Path,
    engine: str = "auto",
    model: Path | None = None,
    rate_ppm: float = 1200.0,
    metrics_port: int = 0,
    web_port: int | None = 8080,
    extra_sinks: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    """The demo's config as a plain mapping (what a user would write in YAML).

    A golden-reference model replays `demo_data/line`: each board under test and a good part
    that is a second capture of it (defects repaired, then shifted up to 2 px, a gain, sensor
    noise; `scripts/make_demo_captures.py`), each against its reference (`demo_data/references`),
    with `reference_align` on. A frame-only model replays `demo_data/images` (boards under test
    and the defect-free templates as good parts).
    """
    model_path = (model or default_model()).resolve()
    camera: dict[str, object] = {
        "type": "replay",
        "name": "line1",
        "path": str(DEMO_DATA / "images"),
        "rate_ppm": rate_ppm,
        "loop": True,
        "labels": "yolo",
        "labels_dir": str(DEMO_DATA / "labels"),
    }
    reference = read_model_info(model_path).reference_input
    if reference:
        camera["path"] = str(DEMO_DATA / "line")
        camera["references"] = str(DEMO_DATA / "references")
    return {
        "version": "demo",
        "cameras": [camera],
        "engine": {"type": engine, "model": str(model_path)},
        "decision": {"min_confidence": 0.25, "thresholds_file": "auto"},
        "pipeline": {"budget_ms": 250, "ring_slots": 8},
        "sinks": [
            {"type": "jsonl", "path": str((out_dir / "verdicts.jsonl").resolve())},
            {"type": "log"},
            *(extra_sinks or []),  # the PLC links (plc.demo_harness): mqtt to the demo's broker, the OPC UA server
        ],
        "metrics": {"port": metrics_port},
        "state_dir": str((out_dir / "state").resolve()),  # journals, audit trail, evidence images
        "evidence": {"enabled": True, "pass_sample": 0.05},
        # the status page on 127.0.0.1 (None: off; 0: any free port)
        "web": {"enabled": web_port is not None, "port": web_port or 0},
        # the line's parts sit up to a few px off their references: shift each reference onto its part
        "reference_align": {"max_shift_px": 8 if reference else 0},
    }


def demo_config(
    out_dir: Path,
    engine: str = "auto",
    model: Path | None = None,
    rate_ppm: float = 1200.0,
    metrics_port: int = 0,
    web_port: int | None = 8080,
    extra_sinks: list[dict[str, object]] | None = None,
) -> LoadedConfig:
    raw = demo_config_dict(out_dir, engine, model, rate_ppm, metrics_port, web_port, extra_sinks)
    text = yaml.safe_dump(raw, sort_keys=False)
    return parse_config(text, "<demo config>", base_dir=Path.cwd())
