"""The verdict emitter: builds the one immutable `Verdict` for a decided frame and fans it out.

Called by the ring outside its lock, in whichever thread won the gate (inference worker,
deadline watchdog, or a camera thread for frames refused at the door), before the frame's buffer
goes back to the camera. Fan-out order: every sink's `submit` (non-blocking), the statistics,
the metrics, then the subscribers, which still see the camera's buffer (`frame.array`) and may
copy what they need. No consumer runs under the ring's lock, and none under a lock of the
emitter either: the worker and the watchdog may fan out at the same time, so one slow consumer
never holds back another frame's verdict. Sinks and subscribers must therefore be thread-safe
(sinks hand over through their own queues), and two verdicts decided a moment apart may reach a
consumer in either order (each carries its `decided_ns`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from cameras.base import Frame
from edge.decision import CompiledRules
from edge.inspector import WorkResult
from edge.metrics import PipelineMetrics
from edge.ring import Decided
from edge.sinks.base import DropWarner, Sink
from edge.stats import PipelineStats
from edge.verdict import Reason, Verdict, VerdictKind, new_result_id

log = logging.getLogger(__name__)

VerdictListener = Callable[[Verdict, Frame], None]


class Subscription:
    """A subscriber's handle; `close()` stops its calls (idempotent)."""

    def __init__(self, emitter: VerdictEmitter, name: str, listener: VerdictListener) -> None:
        self._emitter = emitter
        self.name = name
        self.listener = listener
        self.calls = 0
        self.errors = 0

    def close(self) -> None:
        self._emitter._unsubscribe(self)


class VerdictEmitter:
    def __init__(
        self,
        sinks: Sequence[Sink],
        stats: PipelineStats,
        metrics: PipelineMetrics,
        model_id: str,
        config_version: str,
    ) -> None:
        self.sinks = list(sinks)
        self.stats = stats
        self.metrics = metrics
        self.model_id = model_id
        self.config_version = config_version
        self.recipe = ""
        # the rules in force (the pipeline's inspector's): named in FAILSAFE verdicts, which no rule judged
        self.rules_in_force: Callable[[], CompiledRules | None] = lambda: None
        self._subs: tuple[Subscription, ...] = ()  # copy-on-write: read without a lock
        self._subs_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._warn = DropWarner("subscribers", "subscriber raised on")
        self.emitted = 0

    # -- subscriptions ------------------------------------------------------------------
    def subscribe(self, listener: VerdictListener, name: str) -> Subscription:
        sub = Subscription(self, name, listener)
        with self._subs_lock:
            self._subs = (*self._subs, sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subs

    # -- emission -------------------------------------------------------------------------
    def build(self, d: Decided, now_ns: int) -> tuple[Verdict, float | None]:
        """The verdict record for a decision, and the engine time (ms) when it was judged."""
        frame = d.frame
        engine_ms: float | None = None
        rules: CompiledRules | None = None
        if d.reason is None:
            w = d.payload
            assert isinstance(w, WorkResult)
            rules = w.rules
            kind = w.decision.verdict
            reasons = w.decision.reasons
            detections = w.decision.detections
            engine_ms = (w.inferred_ns - w.preprocessed_ns) / 1e6
            latencies = {
                "queue": (w.started_ns - d.arrived_ns) / 1e6,
                "preprocess": (w.preprocessed_ns - w.started_ns) / 1e6,
                "infer": engine_ms,
                "postprocess": (w.finished_ns - w.inferred_ns) / 1e6,
                "total": (now_ns - frame.captured_ns) / 1e6,
            }
        else:
            kind = VerdictKind.FAILSAFE
            detail = f": {d.payload}" if d.payload not in (None, "") else ""
            reasons = (Reason("failsafe", f"{d.reason.value}{detail}"),)
            detections = ()
            latencies = {"total": (now_ns - frame.captured_ns) / 1e6}
        if rules is None:
            rules = self.rules_in_force()
        verdict = Verdict(
            result_id=new_result_id(),
            part_id=frame.part_id,
            frame_id=frame.frame_id,
            camera=frame.camera,
            verdict=kind,
            reasons=reasons,
            detections=detections,
            captured_ns=frame.captured_ns,
            arrived_ns=d.arrived_ns,
            decided_ns=now_ns,
            deadline_ns=d.deadline_ns,
            decided_wall_ns=time.time_ns(),
            latencies_ms=latencies,
            model_id=self.model_id,
            config_version=self.config_version,
            failsafe_reason=d.reason,
            recipe=self.recipe,
            decision_set=rules.set_name if rules is not None else "",
            rules_id=rules.rules_id if rules is not None else "",
        )
        return verdict, engine_ms

    def emit(self, d: Decided) -> Verdict:
        now = time.monotonic_ns()
        verdict, engine_ms = self.build(d, now)
        frame = d.frame
        for s in self.sinks:
            try:
                s.submit(verdict)
            except Exception:  # submit must not raise; one that does must not cost the others
                log.exception("sink %s raised in submit for %s", s.name, verdict.result_id)
        self.stats.record(verdict, frame.truth.defective if frame.truth is not None else None, engine_ms)
        m = self.metrics
        m.verdict(frame.camera, verdict.verdict, verdict.failsafe_reason)
        lat = verdict.latencies_ms
        if engine_ms is not None:
            m.stage("queue", lat["queue"] / 1e3)
            m.stage("preprocess", lat["preprocess"] / 1e3)
            m.stage("infer", engine_ms / 1e3)
            m.stage("postprocess", lat["postprocess"] / 1e3)
        m.stage("total", lat["total"] / 1e3)
        m.margin(verdict.margin_ms / 1e3)
        for sub in self._subs:
            try:
                sub.listener(verdict, frame)
                ok = True
            except Exception:
                ok = False
                self._warn.drop()
                log.debug("subscriber %s failed on %s", sub.name, verdict.result_id, exc_info=True)
            with self._count_lock:
                sub.calls += 1
                sub.errors += 0 if ok else 1
        with self._count_lock:
            self.emitted += 1
        return verdict
