"""`LiveFeed`, the web app's read model: the last verdicts (a subscriber) and cached snapshots.

The listener runs in the pipeline's emitting thread and only appends the verdict object to a
bounded deque; everything else (dicts for the page, the snapshot) is built on request, in the
web app's thread, at most once per `max_age_s` for the snapshot however many pages are open.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cameras.base import Frame
from edge.verdict import Verdict


def verdict_view(v: Verdict) -> dict[str, Any]:
    """The compact form of a verdict the status page shows."""
    first = v.reasons[0].message if v.reasons else ""
    return {
        "result_id": v.result_id,
        "part_id": v.part_id,
        "camera": v.camera,
        "verdict": v.verdict.value,
        "failsafe_reason": v.failsafe_reason.value if v.failsafe_reason else None,
        "reason": first,
        "classes": sorted({d.name for d in v.detections}),
        "latency_ms": round(v.latency_ms, 2),
        "decided_wall_ns": v.decided_wall_ns,
    }


class LiveFeed:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], recent: int = 24, max_age_s: float = 0.5) -> None:
        self._snapshot = snapshot
        self._recent: deque[Verdict] = deque(maxlen=recent)
        self.seq = 0  # verdicts seen so far
        self.max_age_s = max_age_s
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, verdict: Verdict, frame: Frame) -> None:
        self._recent.append(verdict)
        self.seq += 1

    def recent(self, since_seq: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(current seq, the verdicts after `since_seq`, newest first) at most the deque's length."""
        seq = self.seq
        items = list(self._recent)
        if since_seq is not None:
            items = items[len(items) - max(0, min(len(items), seq - since_seq)) :]
        return seq, [verdict_view(v) for v in reversed(items)]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            if self._cached is None or now - self._cached_at >= self.max_age_s:
                self._cached = self._snapshot()
                self._cached_at = now
            return self._cached
