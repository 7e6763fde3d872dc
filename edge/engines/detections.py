"""Decoded detections: what an engine's decode step hands to the decision rules.

`Detections` holds one frame's boxes as arrays (struct of arrays, no per-box objects on the hot
path); `Detection` is one of them with its class name, as the verdict record carries it.
Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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
class Detections:
    """Decoded detections as arrays (struct of arrays): boxes (n, 4) xyxy in camera pixels."""

    boxes: np.ndarray  # float32 (n, 4)
    scores: np.ndarray  # float32 (n,)
    classes: np.ndarray  # int32 (n,)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def to_list(self, names: tuple[str, ...] | list[str]) -> tuple[Detection, ...]:
        out = []
        for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True):
            name = names[c] if 0 <= c < len(names) else str(c)
            out.append(Detection(int(c), name, float(s), (b[0], b[1], b[2], b[3])))
        return tuple(out)
