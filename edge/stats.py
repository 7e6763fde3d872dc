"""Running statistics for the status line, the demo summary and the status page.

Latencies go into fixed-size circular arrays (no growth, no per-frame allocation); counts are
plain integers updated by the verdict emitter under this object's lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.verdict import FailsafeReason, Verdict, VerdictKind


class LatencyWindow:
    """The last `capacity` samples (ms) in a preallocated ring; percentiles over them."""

    def __init__(self, capacity: int = 65536) -> None:
        self._buf = np.zeros(capacity, np.float64)
        self._n = 0

    def add(self, value_ms: float) -> None:
        self._buf[self._n % self._buf.shape[0]] = value_ms
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def values(self) -> np.ndarray:
        return self._buf[: min(self._n, self._buf.shape[0])]

    def percentiles(self, *qs: float) -> list[float | None]:
        v = self.values()
        if v.size == 0:
            return [None for _ in qs]
        return [round(float(x), 3) for x in np.percentile(v, qs)]

    def max(self) -> float | None:
        v = self.values()
        return round(float(v.max()), 3) if v.size else None


class RecentVerdicts:
    """The last `capacity` verdicts' (decided time, kind, latency) in preallocated arrays, for
    figures over a recent time window (parts/min, reject rate, p50/p99) on the status page."""

    KINDS = tuple(VerdictKind)

    def __init__(self, capacity: int = 8192) -> None:
        self._t = np.zeros(capacity, np.int64)  # monotonic ns
        self._k = np.zeros(capacity, np.int8)
        self._lat = np.zeros(capacity, np.float64)
        self._n = 0

    def add(self, decided_ns: int, kind: VerdictKind, latency_ms: float) -> None:
        i = self._n % self._t.shape[0]
        self._t[i] = decided_ns
        self._k[i] = self.KINDS.index(kind)
        self._lat[i] = latency_ms
        self._n += 1

    def window(self, seconds: float, now_ns: int | None = None) -> dict[str, Any]:
        now = time.monotonic_ns() if now_ns is None else now_ns
        n = min(self._n, self._t.shape[0])
        sel = self._t[:n] >= now - int(seconds * 1e9)
        k = self._k[:n][sel]
        lat = self._lat[:n][sel]
        counts = {kind.value: int((k == i).sum()) for i, kind in enumerate(self.KINDS)}
        total = int(sel.sum())
        span_s = seconds
        if total and self._n <= self._t.shape[0]:  # fewer verdicts than the window holds: since the first
            span_s = min(seconds, max(1e-3, (now - int(self._t[:n][sel].min())) / 1e9))
        p50, p99 = (round(float(x), 3) for x in np.percentile(lat, (50, 99))) if total else (None, None)
        return {
            "window_s": seconds,
            "verdicts": counts,
            "decided": total,
            "parts_per_min": round(total / span_s * 60.0, 1) if total else 0.0,
            "reject_rate": round((counts["REJECT"] + counts["FAILSAFE"]) / total, 4) if total else None,
            "latency_ms": {"p50": p50, "p99": p99, "max": round(float(lat.max()), 3) if total else None},
        }


@dataclass
class AccuracyCounts:
    """Part-level confusion from ground-truth labels (replay with labels)."""

    defective: int = 0
    defective_rejected: int = 0
    good: int = 0
    good_rejected: int = 0

    def add(self, defective: bool, rejected: bool) -> None:
        if defective:
            self.defective += 1
            self.defective_rejected += int(rejected)
        else:
            self.good += 1
            self.good_rejected += int(rejected)

    def as_dict(self) -> dict[str, Any]:
        return {
            "part_recall": round(self.defective_rejected / self.defective, 4) if self.defective else None,
            "false_reject_rate": round(self.good_rejected / self.good, 4) if self.good else None,
            "defective_parts": self.defective,
            "defective_rejected": self.defective_rejected,
            "good_parts": self.good,
            "good_rejected": self.good_rejected,
        }


@dataclass
class PipelineStats:
    """What the pipeline did so far. `record()` is called once per verdict."""

    started: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    verdicts: dict[VerdictKind, int] = field(default_factory=lambda: {k: 0 for k in VerdictKind})
    failsafe: dict[FailsafeReason, int] = field(default_factory=lambda: {r: 0 for r in FailsafeReason})
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    engine: LatencyWindow = field(default_factory=LatencyWindow)
    overhead: LatencyWindow = field(default_factory=LatencyWindow)
    accuracy: AccuracyCounts = field(default_factory=AccuracyCounts)
    model_accuracy: AccuracyCounts = field(default_factory=AccuracyCounts)
    late_results: int = 0
    recent: RecentVerdicts = field(default_factory=RecentVerdicts)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_frame_in(self) -> None:
        with self.lock:
            self.frames_in += 1

    def record(self, v: Verdict, defective: bool | None, engine_ms: float | None) -> None:
        with self.lock:
            self.verdicts[v.verdict] += 1
            if v.failsafe_reason is not None:
                self.failsafe[v.failsafe_reason] += 1
            self.latency.add(v.latency_ms)
            self.recent.add(v.decided_ns, v.verdict, v.latency_ms)
            if engine_ms is not None:
                self.engine.add(engine_ms)
                self.overhead.add(v.latency_ms - engine_ms)
            if defective is not None:
                self.accuracy.add(defective, v.rejected)
                if v.verdict is not VerdictKind.FAILSAFE:
                    self.model_accuracy.add(defective, v.rejected)

    @property
    def decided(self) -> int:
        return sum(self.verdicts.values())

    def window(self, seconds: float = 60.0) -> dict[str, Any]:
        with self.lock:
            out = self.recent.window(seconds)
            out["failsafe_by_reason"] = {r.value: n for r, n in self.failsafe.items() if n}
            out["frames_in"] = self.frames_in
            out["decided_total"] = self.decided
            out["verdicts_total"] = {k.value: n for k, n in self.verdicts.items()}
            return out

    def summary(self) -> dict[str, Any]:
        with self.lock:
            elapsed = time.monotonic() - self.started
            p50, p99 = self.latency.percentiles(50, 99)
            e50, e99 = self.engine.percentiles(50, 99)
            o50, o99 = self.overhead.percentiles(50, 99)
            out: dict[str, Any] = {
                "frames_in": self.frames_in,
                "verdicts": {k.value.lower(): n for k, n in self.verdicts.items()},
                "failsafe_reasons": {r.value: n for r, n in self.failsafe.items() if n},
                "latency_ms": {"p50": p50, "p99": p99, "max": self.latency.max()},
                "engine_ms": {"p50": e50, "p99": e99},
                "overhead_ms": {"p50": o50, "p99": o99},
                "late_results": self.late_results,
                "elapsed_s": round(elapsed, 3),
                "fps": round(self.decided / elapsed, 2) if elapsed > 0 else 0.0,
            }
            if self.accuracy.defective or self.accuracy.good:
                out["accuracy"] = self.accuracy.as_dict()
                out["model_accuracy"] = self.model_accuracy.as_dict()
            return out

    def status_line(self) -> str:
        s = self.summary()
        v = s["verdicts"]
        return (
            f"{s['fps']:7.1f} fps | in {s['frames_in']:6d} | pass {v['pass']:6d} reject {v['reject']:6d} "
            f"failsafe {v['failsafe']:5d} | p99 {s['latency_ms']['p99'] or 0:7.1f} ms"
        )
