"""The verdict record: one immutable record per frame that every sink serialises.

Its JSON form (`Verdict.to_dict`) is versioned by `SCHEMA_VERSION`; the JSON-lines sink, the
MQTT payload, the OPC UA result and the API are all views of it.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# decoded by the engines, carried by the verdict record: re-exported here
from edge.engines.detections import Detection as Detection
from edge.engines.detections import Detections as Detections

# 2: deadline_wall_ns, margin_ms, recipe; failsafe reasons invalid_frame, halted
# 3: decision_set, rules_id (the threshold set that judged the part, and its rules' fingerprint)
SCHEMA_VERSION = 3


class VerdictKind(str, Enum):
    PASS = "PASS"
    REJECT = "REJECT"
    FAILSAFE = "FAILSAFE"


class FailsafeReason(str, Enum):
    """Why a frame was rejected without a judgement."""

    DEADLINE = "deadline"  # not decided by its deadline
    RING_OVERFLOW = "ring_overflow"  # the ring was full and this frame gave way
    ENGINE_ERROR = "engine_error"  # preprocessing, inference or decoding raised
    CAMERA_ERROR = "camera_error"  # the camera delivered an unusable frame (incomplete, bad format)
    SHUTDOWN = "shutdown"  # the service stopped before the frame could be judged
    INVALID_FRAME = "invalid_frame"  # the frame cannot be trusted (undecodable, truncated, wrong size, blank)
    HALTED = "halted"  # the station is halted (operator or PLC): frames are rejected, not judged


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a verdict is what it is: the rule that fired and, for a defect, which detection."""

    rule: str
    message: str
    detection: Detection | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.detection is not None:
            d["detection"] = self.detection.to_dict()
        return d


_counter = itertools.count()
_PROCESS_TAG = os.getpid() & 0xFFFF


def new_result_id(now_ns: int | None = None) -> str:
    """A unique id that sorts by creation time: wall-clock ns, process tag, sequence (hex)."""
    t = time.time_ns() if now_ns is None else now_ns
    return f"{t:016x}-{_PROCESS_TAG:04x}-{next(_counter) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Exactly one per frame. Timestamps are host monotonic ns unless named `_wall`."""

    result_id: str
    part_id: str
    frame_id: int
    camera: str
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    detections: tuple[Detection, ...]
    captured_ns: int
    arrived_ns: int
    decided_ns: int
    deadline_ns: int
    decided_wall_ns: int
    latencies_ms: dict[str, float] = field(default_factory=dict)
    model_id: str = ""
    config_version: str = ""
    failsafe_reason: FailsafeReason | None = None
    recipe: str = ""
    decision_set: str = ""  # the threshold set that judged it (for a FAILSAFE: the one in force)
    rules_id: str = ""  # the fingerprint of those rules (edge.decision.rules_fingerprint)
    _json: str | None = field(default=None, init=False, repr=False, compare=False)  # to_json()'s cache

    @property
    def deadline_wall_ns(self) -> int:
        """The deadline on the wall clock (for receivers in other processes and machines)."""
        return self.decided_wall_ns + (self.deadline_ns - self.decided_ns)

    @property
    def margin_ms(self) -> float:
        """Time left before the deadline when the verdict was decided (negative: late)."""
        return (self.deadline_ns - self.decided_ns) / 1e6

    @property
    def latency_ms(self) -> float:
        """Capture to verdict, in milliseconds."""
        return (self.decided_ns - self.captured_ns) / 1e6

    @property
    def rejected(self) -> bool:
        """True when the part is to be rejected (REJECT or FAILSAFE)."""
        return self.verdict is not VerdictKind.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "result_id": self.result_id,
            "part_id": self.part_id,
            "frame_id": self.frame_id,
            "camera": self.camera,
            "verdict": self.verdict.value,
            "failsafe_reason": self.failsafe_reason.value if self.failsafe_reason else None,
            "reasons": [r.to_dict() for r in self.reasons],
            "detections": [d.to_dict() for d in self.detections],
            "timestamps_ns": {
                "captured": self.captured_ns,
                "arrived": self.arrived_ns,
                "decided": self.decided_ns,
                "deadline": self.deadline_ns,
                "decided_wall": self.decided_wall_ns,
            },
            "deadline_wall_ns": self.deadline_wall_ns,
            "margin_ms": round(self.margin_ms, 3),
            "latency_ms": {k: round(v, 3) for k, v in self.latencies_ms.items()},
            "model_id": self.model_id,
            "config_version": self.config_version,
            "recipe": self.recipe,
            "decision_set": self.decision_set,
            "rules_id": self.rules_id,
        }

    def to_json(self) -> str:
        """`to_dict()` as compact JSON, serialised once per verdict however many sinks ask."""
        text = self._json
        if text is None:
            text = json.dumps(self.to_dict(), separators=(",", ":"))
            object.__setattr__(self, "_json", text)  # the record is immutable: a benign race at worst
        return text
