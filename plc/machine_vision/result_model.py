"""The OPC UA view of a verdict and of the station's mode: pure, no I/O, no asyncua.

`result_fields(record)` turns a verdict record (`Verdict.to_dict()`) into the field values of the
Machine Vision `ResultReadyEventType` and of the station's flat variables; `vision_states(mode)`
maps the service's mode onto the VisionStateMachine and its automatic-mode sub-state machine.

Codes (documented in docs/PLC.md): the verdict code and `ResultState` are 1 PASS, 2 REJECT,
3 FAILSAFE (0: no verdict yet).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plc.stale import deadline_wall_ns, margin_ms

VERDICT_CODES = {"PASS": 1, "REJECT": 2, "FAILSAFE": 3}
NO_VERDICT = 0
SEVERITY = {"PASS": 100, "REJECT": 500, "FAILSAFE": 700}


def wall(ns: int) -> dt.datetime:
    """Wall-clock ns since the epoch -> an aware UTC datetime (OPC UA DateTime, 100 ns resolution)."""
    return dt.datetime.fromtimestamp(ns // 1000 / 1e6, tz=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class ResultFields:
    """Everything the server publishes for one verdict (event fields and flat variables)."""

    result_id: str
    part_id: str
    meas_id: str  # the frame id: one measurement per frame
    job_id: str
    camera: str
    verdict: str
    verdict_code: int  # ResultState too
    failsafe_reason: str
    recipe: str
    creation_time: dt.datetime  # when the verdict was decided
    start_time: dt.datetime  # when the frame was captured
    end_time: dt.datetime  # == creation_time
    acquisition_ms: float  # capture -> arrival in the service
    processing_ms: float  # arrival -> verdict
    deadline_time: dt.datetime
    deadline_wall_ns: int
    margin_ms: float
    late: bool  # decided after its deadline: not to be actuated
    reasons: tuple[str, ...]
    detections_json: str
    reasons_json: str
    severity: int
    message: str

    @property
    def content(self) -> list[str]:
        """ResultContent (BaseDataType[]): verdict, failsafe reason, reasons JSON, detections JSON."""
        return [self.verdict, self.failsafe_reason, self.reasons_json, self.detections_json]


def result_fields(record: Mapping[str, Any], job_id: str, recipe: str = "") -> ResultFields:
    ts = record.get("timestamps_ns") or {}
    decided_wall = int(ts.get("decided_wall", 0))
    captured, arrived, decided = int(ts.get("captured", 0)), int(ts.get("arrived", 0)), int(ts.get("decided", 0))
    start_wall = decided_wall - max(0, decided - captured)
    verdict = str(record.get("verdict", ""))
    deadline = deadline_wall_ns(record)
    margin = margin_ms(record)
    reasons = record.get("reasons") or []
    detections = record.get("detections") or []
    fs = record.get("failsafe_reason") or ""
    part = str(record.get("part_id", ""))
    why = fs or "; ".join(str(r.get("message", "")) for r in reasons) or "no defect"
    return ResultFields(
        result_id=str(record.get("result_id", "")),
        part_id=part,
        meas_id=str(record.get("frame_id", "")),
        job_id=job_id,
        camera=str(record.get("camera", "")),
        verdict=verdict,
        verdict_code=VERDICT_CODES.get(verdict, NO_VERDICT),
        failsafe_reason=str(fs),
        recipe=str(record.get("recipe") or recipe),
        creation_time=wall(decided_wall),
        start_time=wall(start_wall),
        end_time=wall(decided_wall),
        acquisition_ms=max(0.0, (arrived - captured) / 1e6),
        processing_ms=max(0.0, (decided - arrived) / 1e6),
        deadline_time=wall(deadline),
        deadline_wall_ns=deadline,
        margin_ms=round(margin, 3),
        late=margin < 0,
        reasons=tuple(str(r.get("message", "")) for r in reasons),
        detections_json=json.dumps(detections, separators=(",", ":")),
        reasons_json=json.dumps(reasons, separators=(",", ":")),
        severity=SEVERITY.get(verdict, 500),
        message=f"{verdict} part {part} ({why})" + (" LATE" if margin < 0 else ""),
    )


@dataclass(frozen=True, slots=True)
class VisionStates:
    """Current states of the VisionStateMachine (and its AutomaticModeStateMachine, when Operational)."""

    main: str  # Preoperational | Halted | Error | Operational
    automatic: str | None  # Initialized | Ready | SingleExecution | ContinuousExecution


def vision_states(mode: str, halted_by_method: bool = False, error: bool = False) -> VisionStates:
    """The Machine Vision view of the service's mode.

    running -> Operational/ContinuousExecution; single -> Operational/SingleExecution; halted ->
    Operational/Ready after Stop/Abort (a job can be started again), Halted after the Halt method
    (Reset brings the system back to Operational/Ready); an internal error -> Error.
    """
    if error:
        return VisionStates("Error", None)
    if mode == "running":
        return VisionStates("Operational", "ContinuousExecution")
    if mode == "single":
        return VisionStates("Operational", "SingleExecution")
    if mode == "halted" and halted_by_method:
        return VisionStates("Halted", None)
    if mode == "halted":
        return VisionStates("Operational", "Ready")
    return VisionStates("Preoperational", None)


@dataclass
class Counters:
    """The flat counters: sequence (+1 per verdict) and per-verdict totals (UInt32, wrapping)."""

    sequence: int = 0
    passed: int = 0
    rejected: int = 0
    failsafe: int = 0

    def add(self, verdict: str) -> None:
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        if verdict == "PASS":
            self.passed = (self.passed + 1) & 0xFFFFFFFF
        elif verdict == "REJECT":
            self.rejected = (self.rejected + 1) & 0xFFFFFFFF
        else:
            self.failsafe = (self.failsafe + 1) & 0xFFFFFFFF
