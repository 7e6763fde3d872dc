"""Assemble a pipeline from a validated config: cameras, engine, rules, sinks, metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.config import LoadedConfig
from edge.decision import CompiledRules, compile_rules, describe
from edge.engines.base import Engine, ModelInfo
from edge.errors import ConfigError
from edge.metrics import PipelineMetrics
from edge.pipeline import DecodeSettings, Inspector, Pipeline

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A built, not yet started pipeline and what it was built from."""

    pipeline: Pipeline
    engine: Engine
    info: ModelInfo
    rules: CompiledRules
    metrics: PipelineMetrics
    metrics_server: Any = None

    def start(self, serve_metrics: bool = True, config: LoadedConfig | None = None) -> None:
        if serve_metrics and config is not None:
            self.metrics_server = self.metrics.serve(config.app.metrics)
        self.pipeline.start()

    def stop(self) -> dict[str, Any]:
        summary = self.pipeline.stop()
        self.engine.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        summary["model"] = {
            "path": self.info.path,
            "model_id": self.info.model_id,
            "runtime": getattr(self.engine, "runtime", "?"),
            "input": list(self.info.input_hw),
        }
        return summary


def _check_buffers(cfg: LoadedConfig) -> None:
    slots = cfg.app.pipeline.ring_slots
    for i, cam in enumerate(cfg.cameras):
        nbuf = getattr(cam, "num_buffers", None)
        if nbuf is not None and nbuf <= slots:
            raise ConfigError(
                f"cameras[{i}].num_buffers ({nbuf}) must exceed pipeline.ring_slots ({slots}): "
                "the ring holds camera buffers until their verdicts"
            )


def load_references(cfg: LoadedConfig, info: ModelInfo) -> dict[str, np.ndarray]:
    """The configured golden references (grey, read-only), checked against the model and cameras.

    A golden-reference model needs a reference for every camera: a fixed one here, or per image
    from a camera that supplies them (replay `references`); a plain model must have none.
    """
    given = cfg.app.references
    with_refs = [c.name for c in cfg.cameras if getattr(c, "references", None)]  # per image (replay)
    if not info.reference_input:
        if given or with_refs:
            where = "references" if given else f"cameras {with_refs}: references"
            raise ConfigError(
                f"{where}: {info.path} takes camera frames alone, not golden-reference composites; "
                "remove the references or use a golden-reference model"
            )
        return {}
    missing = [c.name for c in cfg.cameras if c.name not in given and c.name not in with_refs]
    if missing:
        raise ConfigError(
            f"{info.path} compares each part with its golden reference: give 'references: {{<camera>: <image>}}' "
            f"(or a replay camera's 'references' folder) for cameras {missing}"
        )
    out: dict[str, np.ndarray] = {}
    for name, rel in given.items():
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else cfg.base_dir / path
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ConfigError(f"references.{name}: cannot read image {path}")
        image.flags.writeable = False
        out[name] = image
        log.info("camera %s: golden reference %s (%dx%d)", name, path, image.shape[1], image.shape[0])
    return out


def build_service(cfg: LoadedConfig, max_frames: int | None = None) -> Service:
    from edge.engines.factory import build_engine

    _check_buffers(cfg)
    engine = build_engine(cfg.engine, cfg.base_dir)
    info = engine.load()  # idempotent: returns the loaded model's info
    try:
        rules = compile_rules(cfg.app.decision, info.names, Path(info.path), cfg.base_dir)
        log.info("decision thresholds: %s", describe(rules))
        inspector = Inspector(
            engine,
            info,
            rules,
            DecodeSettings(cfg.engine.confidence, cfg.engine.iou, cfg.engine.max_detections),
            load_references(cfg, info),
            align_max_shift_px=cfg.app.reference_align.max_shift_px,
            align_min_response=cfg.app.reference_align.min_response,
        )
        cameras = [c.build(cfg.base_dir) for c in cfg.cameras]
        sinks = [s.build(cfg.base_dir) for s in cfg.sinks]
    except Exception:
        engine.close()
        raise
    metrics = PipelineMetrics([c.name for c in cameras], [s.name for s in sinks])
    reconnect = {c.name: (c.reconnect_initial_s, c.reconnect_max_s) for c in cfg.cameras}
    pipeline = Pipeline(
        cameras,
        inspector,
        sinks,
        cfg.app.pipeline,
        metrics,
        config_version=cfg.config_version,
        reconnect=reconnect,
        max_frames=max_frames,
    )
    return Service(pipeline, engine, info, rules, metrics)
