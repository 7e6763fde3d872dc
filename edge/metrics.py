"""Prometheus metrics for one pipeline, in its own CollectorRegistry (no global state).

Label children are resolved once per camera/verdict/reason so the hot path only increments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from edge.verdict import FailsafeReason, VerdictKind

log = logging.getLogger(__name__)

MARGIN_BUCKETS = (-0.1, -0.01, 0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
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
        self.margin_hist = Histogram(
            "edge_deadline_margin_seconds",
            "Time left before the part's deadline when its verdict was decided (negative: late)",
            buckets=MARGIN_BUCKETS,
            registry=r,
        )
        self.margin_last = Gauge("edge_deadline_margin_last_seconds", "Margin of the latest verdict", registry=r)
        self.engine_errors = Counter("edge_engine_errors", "Engine failures", registry=r)
        self._frames_in = {c: self.frames_in.labels(c) for c in cameras}
        self._verdicts = {(c, k): self.verdicts.labels(c, k.value) for c in cameras for k in VerdictKind}
        self._failsafe = {(c, f): self.failsafe.labels(c, f.value) for c in cameras for f in FailsafeReason}
        self._stage = {s: self.latency.labels(s) for s in STAGES}
        for c in cameras:
            self.reconnects.labels(c)
            self.connected.labels(c).set(0)
            self.outage.labels(c)

    def frame_in(self, camera: str) -> None:
        self._frames_in[camera].inc()

    def verdict(self, camera: str, kind: VerdictKind, reason: FailsafeReason | None) -> None:
        self._verdicts[(camera, kind)].inc()
        if reason is not None:
            self._failsafe[(camera, reason)].inc()

    def stage(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def margin(self, seconds: float) -> None:
        self.margin_hist.observe(seconds)
        self.margin_last.set(seconds)

    def watch_sinks(self, sinks: Sequence[Any]) -> None:
        """Export every sink's live `health()` counters at each scrape (never stale, no updater)."""
        self.registry.register(SinkCollector(sinks))

    def serve(self, config: MetricsConfig) -> Any:
        if not config.enabled or config.port == 0:
            return None
        try:
            server, thread = start_http_server(config.port, addr=config.host, registry=self.registry)
        except OSError as exc:  # taken since the preflight check, or a host that is not ours
            from edge.errors import ConfigError
            from edge.preflight import describe_bind_error

            raise ConfigError(describe_bind_error(config.host, config.port, exc)) from exc
        log.info("metrics on http://%s:%s/metrics", config.host, config.port)
        return server


# health() keys exported per sink, as edge_sink_<key>{sink=...}
SINK_GAUGES = {
    "submitted": "Verdicts handed to the sink",
    "written": "Verdicts the sink wrote or delivered (acknowledged)",
    "dropped": "Verdicts the sink dropped (queue full, refused for good); each is also logged",
    "errors": "Write or delivery errors (retried)",
    "backlog": "Verdicts waiting (in memory and, for durable sinks, on disk)",
    "live": "1 when the sink is delivering now",
    "connected": "1 when the link to the far side (broker, PLC) is up",
    "last_ack_age_s": "Seconds since the far side last acknowledged a verdict",
    "replayed": "Verdicts delivered after a restart of the service (durable sinks)",
    "expired": "Verdicts dropped undelivered by the journal's age/size bound (durable sinks)",
    "late": "Verdicts delivered after their part's deadline (durable sinks)",
    "oldest_waiting_s": "Age of the oldest verdict waiting in the journal (durable sinks)",
}


class SinkCollector(Collector):
    """Reads each sink's health() at scrape time."""

    def __init__(self, sinks: Sequence[Any]) -> None:
        self.sinks = list(sinks)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {k: GaugeMetricFamily(f"edge_sink_{k}", doc, labels=["sink"]) for k, doc in SINK_GAUGES.items()}
        for sink in self.sinks:
            try:
                health = sink.health()
            except Exception:  # a sink that cannot say is not live
                health = {"live": False}
            for key, family in families.items():
                value = health.get(key)
                if isinstance(value, (bool, int, float)):
                    family.add_metric([sink.name], float(value))
        yield from families.values()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
