"""The verdict record: one immutable record per frame that every sink serialises.

Its JSON form (`Verdict.to_dict`) is versioned by `SCHEMA_VERSION`; the JSON-lines sink, the
MQTT payload, the OPC UA result and the API are all views of it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

SCHEMA_VERSION = 1


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


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected defect, its box in camera pixels (x1, y1, x2, y2)."""

    cls: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_id": self.cls,
            "class": self.name,
            "confidence": round(self.confidence, 5),
            "box": [round(v, 2) for v in self.box],
        }


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


@dataclass(frozen=True, slots=True)
class Detections:
    """Decoded detections as arrays (struct of arrays): boxes (n, 4) xyxy in camera pixels."""

    boxes: np.ndarray  # float32 (n, 4)
    scores: np.ndarray  # float32 (n,)
    classes: np.ndarray  # int32 (n,)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
        )

    def to_list(self, names: tuple[str, ...] | list[str]) -> tuple[Detection, ...]:
        out = []
        for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True):
            name = names[c] if 0 <= c < len(names) else str(c)
            out.append(Detection(int(c), name, float(s), (b[0], b[1], b[2], b[3])))
        return tuple(out)


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
            "latency_ms": {k: round(v, 3) for k, v in self.latencies_ms.items()},
            "model_id": self.model_id,
            "config_version": self.config_version,
        }
