"""The service's read model: one frozen picture of what the station is doing.

The status page, the API, the OPC UA variables, `doctor` and the systemd watchdog read this
(`Service.snapshot()`), never the pipeline's internals. Building one takes a few locks briefly
and allocates a few small dicts: call it at human or PLC rates (seconds), not per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EngineInfo:
    runtime: str
    model_path: str
    model_id: str
    input_hw: tuple[int, int]
    names: tuple[str, ...]
    reference_input: bool


@dataclass(frozen=True)
class ServiceSnapshot:
    state: str  # starting | running | halted | single | stopping | stopped
    started_wall_ns: int
    uptime_s: float
    config_version: str
    recipe: str
    budget_ms: float
    engine: EngineInfo
    cameras: tuple[dict[str, Any], ...]
    ring: dict[str, Any]
    workers: dict[str, Any]
    sinks: tuple[dict[str, Any], ...]
    stats: dict[str, Any]
    subscribers: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    decision_set: str = "default"  # the threshold set in force
    rules_id: str = ""  # its rules' fingerprint (what verdicts judged now carry)

    @property
    def ready(self) -> bool:
        """Cameras streaming, workers alive, every sink live: the station can judge parts now."""
        return not self.not_ready_reasons()

    def not_ready_reasons(self) -> list[str]:
        out: list[str] = []
        if self.state not in ("running", "single"):
            out.append(f"state is {self.state}")
        for c in self.cameras:
            if not c.get("connected"):
                why = f" ({c['last_error']})" if c.get("last_error") else ""
                out.append(f"camera {c['name']} not connected{why}")
        if not self.workers.get("inference_alive"):
            out.append("inference worker not running")
        if not self.workers.get("watchdog_alive"):
            out.append("deadline watchdog not running")
        for s in self.sinks:
            if not s.get("live"):
                out.append(f"sink {s.get('name')} not live" + (f" ({s['last_error']})" if s.get("last_error") else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["engine"]["input_hw"] = list(self.engine.input_hw)
        d["engine"]["names"] = list(self.engine.names)
        d["cameras"] = list(self.cameras)
        d["sinks"] = list(self.sinks)
        d["subscribers"] = list(self.subscribers)
        d["ready"] = self.ready
        d["not_ready"] = self.not_ready_reasons()
        return d
