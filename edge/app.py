"""Assemble and run the service from a validated config: cameras, engine, rules, sinks, metrics,
the I/O loop and the service context that the sinks and the web/OPC UA side see.

    build_service(cfg) -> Service: nothing runs yet (the model is loaded, files are checked)
    service.start()    -> sinks bound to the context and started, I/O loop, metrics, pipeline
    service.snapshot() -> the read model (edge.snapshot)
    service.stop()     -> cameras, drain, workers, sinks (journals flushed), I/O loop; the summary
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cameras.base import Frame
from edge.config import LoadedConfig
from edge.control import ServiceContext, ServiceControl
from edge.decision import CompiledRules, DecisionConfig, compile_rules, describe
from edge.engines.base import Engine, ModelInfo
from edge.errors import ConfigError
from edge.frame_check import PREFIX as FRAME_CHECK_PREFIX
from edge.frame_check import FrameCheck
from edge.inspector import DecodeSettings, Inspector
from edge.ioloop import IoLoop
from edge.metrics import PipelineMetrics
from edge.pipeline import Pipeline
from edge.sinks.base import bind_sink
from edge.sinks.outbox import attach_outbox
from edge.snapshot import EngineInfo, ServiceSnapshot
from edge.web.surface import OperatorSurface

log = logging.getLogger(__name__)


@dataclass
class Service:
    """A built, not yet started pipeline and what it was built from."""

    pipeline: Pipeline
    engine: Engine
    info: ModelInfo
    rules: CompiledRules
    metrics: PipelineMetrics
    config: LoadedConfig | None = None
    control: ServiceControl | None = None
    ioloop: IoLoop = field(default_factory=IoLoop)
    metrics_server: Any = None
    state: str = "built"
    started_wall_ns: int = 0
    _started_mono: float = 0.0
    components: list[Any] = field(default_factory=list)  # started after the pipeline, stopped after it drained

    @property
    def context(self) -> ServiceContext:
        assert self.config is not None and self.control is not None, "build the service with build_service()"
        return ServiceContext(
            ioloop=self.ioloop,
            control=self.control,
            state_dir=self.config.state_path,
            config=self.config,
            _snapshot=self.snapshot,
            _subscribe=self.pipeline.subscribe,
            _workers=self.pipeline.worker_health,
        )

    def start(
        self,
        serve_metrics: bool = True,
        config: LoadedConfig | None = None,
        before_cameras: Callable[[], None] | None = None,
    ) -> None:
        cfg = config or self.config
        self.state = "starting"
        self.ioloop.start()
        if self.config is not None and self.control is not None:
            ctx = self.context
            for s in self.pipeline.sinks:
                bind_sink(s, ctx)
            for c in self.components:
                bind_sink(c, ctx)
        if serve_metrics and cfg is not None:
            self.metrics_server = self.metrics.serve(cfg.app.metrics)
        self.started_wall_ns = time.time_ns()
        self._started_mono = time.monotonic()
        self.pipeline.start(before_cameras)
        for c in self.components:
            c.start()
        self.state = "running"

    def snapshot(self) -> ServiceSnapshot:
        p = self.pipeline
        h = p.health()
        mode = p.mode()
        state = self.state if self.state != "running" else ("running" if mode == "running" else mode)
        info = p.inspector.info
        return ServiceSnapshot(
            state=state,
            started_wall_ns=self.started_wall_ns,
            uptime_s=round(time.monotonic() - self._started_mono, 3) if self._started_mono else 0.0,
            config_version=p.config_version,
            recipe=self.control.active_recipe() if self.control is not None else "default",
            decision_set=p.inspector.rules.set_name,
            rules_id=p.inspector.rules.rules_id,
            budget_ms=p.config.budget_ms,
            engine=EngineInfo(
                runtime=str(getattr(p.inspector.engine, "runtime", "?")),
                model_path=str(info.path),
                model_id=info.model_id,
                input_hw=(int(info.input_hw[0]), int(info.input_hw[1])),
                names=tuple(info.names),
                reference_input=bool(info.reference_input),
            ),
            cameras=tuple(h["cameras"].values()),
            ring=h["ring"],
            workers=h["workers"],
            sinks=tuple(h["sinks"]),
            stats=p.stats.window(60.0),
            subscribers=tuple(h["subscribers"]),
        )

    def stop(self) -> dict[str, Any]:
        self.state = "stopping"
        # the pipeline first: frames still in flight get their verdicts, and the components
        # (evidence, the status page) see them before they stop
        summary = self.pipeline.stop()
        for c in reversed(self.components):
            try:
                c.close()
            except Exception:
                log.exception("component %s failed to stop", getattr(c, "name", c))
        self.pipeline.inspector.engine.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.ioloop.stop()
        self.state = "stopped"
        info = self.pipeline.inspector.info
        summary["model"] = {
            "path": info.path,
            "model_id": info.model_id,
            "runtime": getattr(self.pipeline.inspector.engine, "runtime", "?"),
            "input": list(info.input_hw),
        }
        if self.control is not None:
            summary["recipe"] = self.control.active_recipe()
        return summary


def _check_buffers(cfg: LoadedConfig) -> None:
    from edge.preflight import check_buffers  # shared with `config check`

    problems = check_buffers(cfg)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else f"{len(problems)} error(s)", problems)


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


def _inspector(
    cfg: LoadedConfig, engine: Engine, info: ModelInfo, rules: CompiledRules, references: dict[str, np.ndarray]
) -> Inspector:
    return Inspector(
        engine,
        info,
        rules,
        DecodeSettings(cfg.engine.confidence, cfg.engine.iou, cfg.engine.max_detections),
        references,
        align_max_shift_px=cfg.app.reference_align.max_shift_px,
        align_min_response=cfg.app.reference_align.min_response,
    )


def _recipe_loader(cfg: LoadedConfig) -> Any:
    """Builds (inspector, rules) for a recipe's model (runs off the hot path)."""
    from edge.engines.factory import build_engine

    def load(
        model: str, decision: DecisionConfig, references: dict[str, np.ndarray]
    ) -> tuple[Inspector, CompiledRules]:
        engine = build_engine(cfg.engine.model_copy(update={"model": model}), cfg.base_dir)
        try:
            info = engine.load()
            if info.reference_input != bool(references):
                raise ConfigError(
                    f"recipe model {info.path}: "
                    + ("needs golden references" if info.reference_input else "takes no golden references")
                    + " (unlike the running model)"
                )
            rules = compile_rules(decision, info.names, Path(info.path), cfg.base_dir)
            return _inspector(cfg, engine, info, rules, references), rules
        except Exception:
            engine.close()
            raise

    return load


def _frame_checks(cfg: LoadedConfig) -> Any:
    """One validity checker per camera (each runs in its camera's thread)."""
    fc = cfg.app.frame_check
    if not fc.enabled:
        return None
    checks = {
        c.name: FrameCheck(
            {k: v for k, v in fc.expected.items() if k == c.name},
            max_size_ratio=fc.max_size_ratio,
            min_side_px=fc.min_side_px,
            min_std=fc.min_std,
            check_uniform=fc.uniform,
        )
        for c in cfg.cameras
    }

    def check(frame: Frame) -> str | None:
        why = checks[frame.camera].check(frame)
        if why is not None and why.startswith(f"{FRAME_CHECK_PREFIX}: "):
            why = why[len(FRAME_CHECK_PREFIX) + 2 :]
        return why

    return check


def build_service(cfg: LoadedConfig, max_frames: int | None = None) -> Service:
    from edge.engines.factory import build_engine

    _check_buffers(cfg)
    engine = build_engine(cfg.engine, cfg.base_dir)
    info = engine.load()  # idempotent: returns the loaded model's info
    try:
        rules = compile_rules(cfg.app.decision, info.names, Path(info.path), cfg.base_dir)
        log.info("decision thresholds: %s", describe(rules))
        references = load_references(cfg, info)
        inspector = _inspector(cfg, engine, info, rules, references)
        cameras = [c.build(cfg.base_dir) for c in cfg.cameras]
        sinks = [s.build(cfg.base_dir) for s in cfg.sinks]
        surface = OperatorSurface.from_config(cfg)  # audit (a sink), evidence, web: edge.web.surface
        sinks += surface.sinks()
        sinks = attach_outbox(sinks)  # the durable sinks journal through one outbox: edge.sinks.outbox
    except Exception:
        engine.close()
        raise
    metrics = PipelineMetrics([c.name for c in cameras], [s.name for s in sinks])
    surface.registry = metrics.registry
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
        frame_check=_frame_checks(cfg),
    )
    control = ServiceControl(cfg, pipeline, _recipe_loader(cfg), rules, references)
    service = Service(pipeline, engine, info, rules, metrics, config=cfg, control=control)
    if surface.enabled:
        service.components.append(surface)
    return service
