"""Prometheus metrics for one pipeline, in its own CollectorRegistry (no global state).

Label children are resolved once per camera/verdict/reason so the hot path only increments.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel, ConfigDict, Field

from edge.verdict import FailsafeReason, VerdictKind

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
STAGES = ("queue", "preprocess", "infer", "postprocess", "total")


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field("127.0.0.1", description="Bind address of /metrics; loopback unless set.")
    port: int = Field(9108, ge=0, le=65535, description="0 = do not serve (metrics still collected).")


class PipelineMetrics:
    def __init__(self, cameras: list[str], sinks: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in = Counter("edge_frames_in", "Frames admitted from cameras", ["camera"], registry=r)
        self.verdicts = Counter("edge_verdicts", "Verdicts emitted", ["camera", "verdict"], registry=r)
        self.failsafe = Counter("edge_failsafe", "FAILSAFE verdicts by reason", ["camera", "reason"], registry=r)
        self.late = Counter("edge_late_results", "Worker results that arrived after the verdict", registry=r)
        self.ring_occupancy = Gauge("edge_ring_occupancy", "Ring slots holding a frame", registry=r)
        self.ring_slots = Gauge("edge_ring_slots", "Ring size", registry=r)
        self.reconnects = Counter("edge_camera_reconnects", "Camera reconnects", ["camera"], registry=r)
        self.connected = Gauge("edge_camera_connected", "1 when the camera streams", ["camera"], registry=r)
        self.outage = Counter("edge_camera_outage_seconds", "Time cameras were lost", ["camera"], registry=r)
        self.latency = Histogram(
            "edge_stage_latency_seconds", "Per-stage latency", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.sink_dropped = Gauge("edge_sink_dropped", "Verdicts a sink dropped (queue full)", ["sink"], registry=r)
        self.sink_backlog = Gauge("edge_sink_backlog", "Verdicts waiting in a sink queue", ["sink"], registry=r)
        self.engine_errors = Counter("edge_engine_errors", "Engine failures", registry=r)
        self._frames_in = {c: self.frames_in.labels(c) for c in cameras}
        self._verdicts = {(c, k): self.verdicts.labels(c, k.value) for c in cameras for k in VerdictKind}
        self._failsafe = {(c, f): self.failsafe.labels(c, f.value) for c in cameras for f in FailsafeReason}
        self._stage = {s: self.latency.labels(s) for s in STAGES}
        for c in cameras:
            self.reconnects.labels(c)
            self.connected.labels(c).set(0)
            self.outage.labels(c)
        for s in sinks:
            self.sink_dropped.labels(s).set(0)
            self.sink_backlog.labels(s).set(0)

    def frame_in(self, camera: str) -> None:
        self._frames_in[camera].inc()

    def verdict(self, camera: str, kind: VerdictKind, reason: FailsafeReason | None) -> None:
        self._verdicts[(camera, kind)].inc()
        if reason is not None:
            self._failsafe[(camera, reason)].inc()

    def stage(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def serve(self, config: MetricsConfig) -> Any:
        if not config.enabled or config.port == 0:
            return None
        server, thread = start_http_server(config.port, addr=config.host, registry=self.registry)
        log.info("metrics on http://%s:%s/metrics", config.host, config.port)
        return server
