"""A running station for the web tests: replay camera on the demo boards, the golden-reference
model on ONNX Runtime (CPU), audit + evidence + the web app on a free loopback port."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.app import Service, build_service
from edge.config import parse_config
from edge.web.surface import OperatorSurface


@dataclass
class Station:
    service: Service
    surface: OperatorSurface
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    token: str
    base: Path

    def wait(self, cond: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not met within {timeout} s")


def station_config(base: Path, model: Path, images: Path, references: Path, token_env: str, **over: Any) -> str:
    cfg: dict[str, Any] = {
        "version": "web-test",
        "cameras": [
            {
                "type": "replay",
                "name": "line1",
                "path": str(images),
                "references": str(references),
                "rate_ppm": over.pop("rate_ppm", 240),
                "loop": True,
            }
        ],
        "engine": {"type": "onnxruntime", "model": str(model), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": 2000, "ring_slots": 8},  # generous: a loaded CI host must not FAILSAFE
        "sinks": [{"type": "jsonl", "path": str(base / "verdicts.jsonl")}],
        "metrics": {"port": 0},
        "state_dir": str(base / "state"),
        "evidence": {"enabled": True, "pass_sample": 0.1, "min_free_mb": 0},
        "web": {"enabled": True, "port": 0, "token_env": token_env, "max_body_bytes": 4096, "sse_interval_s": 0.5},
    }
    cfg.update(over)
    return yaml.safe_dump(cfg, sort_keys=False)


def start_station(
    base: Path, model: Path, images: Path, references: Path, with_token: bool = True, **over: Any
) -> Iterator[Station]:
    token_env = f"EI_TEST_TOKEN_{secrets.token_hex(4).upper()}"
    token = secrets.token_urlsafe(24)
    if with_token:
        os.environ[token_env] = token
    try:
        cfg = parse_config(station_config(base, model, images, references, token_env, **over), "<web test>", base)
        service = build_service(cfg)
        surface = next(c for c in service.components if isinstance(c, OperatorSurface))
        service.start(serve_metrics=False)
        try:
            assert surface.url is not None
            yield Station(service, surface, surface.url.rstrip("/"), token, base)
        finally:
            service.stop()
    finally:
        os.environ.pop(token_env, None)


@pytest.fixture(scope="module")
def station(
    tmp_path_factory: pytest.TempPathFactory, reference_model_path: Path, demo_images: Path, demo_references: Path
) -> Iterator[Station]:
    yield from start_station(tmp_path_factory.mktemp("station"), reference_model_path, demo_images, demo_references)
