"""The running pipeline: acquisition threads, the inference worker, the deadline watchdog.

    camera thread(s) --put--> Ring --take--> worker: letterbox -> infer -> decode -> decide
                                 ^                                   |
                 watchdog: FAILSAFE at the deadline     complete(): gate -> emit -> release

Each frame's verdict is emitted exactly once, by whoever reaches the ring's gate first, while
the ring lock is held; the emitter builds the immutable `Verdict` and hands it to every sink's
bounded queue, the stats and the metrics. No thread or task is created per frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cameras.base import Camera, Frame
from edge.config import PipelineConfig
from edge.decision import CompiledRules, Decision, decide
from edge.engines.base import Engine, ModelInfo
from edge.engines.letterbox import MAX_FRAME_SIZES, Preprocessor
from edge.engines.yolo import Decoder
from edge.errors import CameraError, CameraLostError, CameraNodeError
from edge.metrics import PipelineMetrics
from edge.reference import ReferenceAligner, compose
from edge.ring import Ring, Slot
from edge.sinks.base import Sink
from edge.stats import PipelineStats
from edge.verdict import FailsafeReason, Reason, Verdict, VerdictKind, new_result_id

log = logging.getLogger(__name__)

VerdictListener = Callable[[Verdict], None]


@dataclass(frozen=True, slots=True)
class WorkResult:
    """What the worker found for one frame, with its stage timestamps (monotonic ns)."""

    decision: Decision
    started_ns: int
    preprocessed_ns: int
    inferred_ns: int
    finished_ns: int


@dataclass(frozen=True)
class DecodeSettings:
    confidence: float
    iou: float
    max_detections: int


class Inspector:
    """Runs one frame through the shared preprocessing, the engine, decoding and the rules.

    For a golden-reference model (`info.reference_input`) each frame is first composed with its
    reference (`edge.reference.compose`): the frame's own (`Frame.reference`) or its camera's
    fixed one from `references`, into buffers kept per batch item and frame size; with
    `align_max_shift_px` the reference is first shifted onto the frame (`ReferenceAligner`).
    """

    def __init__(
        self,
        engine: Engine,
        info: ModelInfo,
        rules: CompiledRules,
        settings: DecodeSettings,
        references: Mapping[str, np.ndarray] | None = None,
        align_max_shift_px: int = 0,
        align_min_response: float = 0.05,
    ) -> None:
        self.engine = engine
        self.info = info
        self.rules = rules
        self.settings = settings
        self.references = dict(references or {})
        buffer = engine.input_buffer()
        self.batch = int(buffer.shape[0])
        self.preprocessors = [Preprocessor(buffer[i]) for i in range(self.batch)]
        self.preprocess = self.preprocessors[0]
        self._composites: list[dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]] = [
            {} for _ in range(self.batch)
        ]
        self.aligners = (
            [ReferenceAligner(align_max_shift_px, align_min_response) for _ in range(self.batch)]
            if align_max_shift_px > 0 and info.reference_input
            else None
        )
        self.decode = Decoder(
            info,
            conf=min(settings.confidence, rules.min_confidence()),
            iou=settings.iou,
            max_det=settings.max_detections,
        )

    def judge(self, frame: Frame) -> WorkResult:
        return self.judge_batch((frame,))[0]

    def judge_batch(self, frames: Sequence[Frame]) -> list[WorkResult]:
        """Judge up to `batch` frames with one inference (batch items beyond len(frames) are stale
        and ignored)."""
        t0 = time.monotonic_ns()
        if self.info.reference_input:
            geometries = [self.preprocessors[i](self._composite(i, f), "BGR") for i, f in enumerate(frames)]
        else:
            geometries = [self.preprocessors[i](f.array, f.channel_order) for i, f in enumerate(frames)]
        t1 = time.monotonic_ns()
        raw = self.engine.infer()
        t2 = time.monotonic_ns()
        out = []
        for i, geometry in enumerate(geometries):
            decision = decide(self.decode(raw[i : i + 1], geometry), self.rules)
            out.append(WorkResult(decision, t0, t1, t2, time.monotonic_ns()))
        return out

    def _composite(self, item: int, frame: Frame) -> np.ndarray:
        """The frame composed with its reference, in batch item `item`'s buffers."""
        reference = frame.reference if frame.reference is not None else self.references.get(frame.camera)
        if reference is None:
            raise CameraError(f"camera {frame.camera}: no golden reference for frame {frame.frame_id}")
        hw = (int(frame.array.shape[0]), int(frame.array.shape[1]))
        buffers = self._composites[item].get(hw)
        if buffers is None:
            if len(self._composites[item]) >= MAX_FRAME_SIZES:  # bounded, like the letterbox's plans
                self._composites[item].clear()
            buffers = (np.empty((*hw, 3), np.uint8), np.empty(hw, np.uint8))
            self._composites[item][hw] = buffers
        if self.aligners is not None:
            reference = self.aligners[item].align(frame.array, reference)
        return compose(frame.array, reference, *buffers)


class Pipeline:
    def __init__(
        self,
        cameras: Sequence[Camera],
        inspector: Inspector,
        sinks: Sequence[Sink],
        config: PipelineConfig,
        metrics: PipelineMetrics,
        stats: PipelineStats | None = None,
        config_version: str = "",
        reconnect: dict[str, tuple[float, float]] | None = None,
        max_frames: int | None = None,
    ) -> None:
        self.cameras = list(cameras)
        self.inspector = inspector
        self.sinks = list(sinks)
        self.config = config
        self.metrics = metrics
        self.stats = stats or PipelineStats()
        self.config_version = config_version
        self.model_id = inspector.info.model_id
        self.reconnect = reconnect or {}
        self.max_frames = max_frames
        self.budget_ns = int(config.budget_ms * 1e6)
        self.listeners: list[VerdictListener] = []
        self.fatal_errors: list[str] = []  # what stopped a camera for good (shown in the summary)
        self.ring = Ring(config.ring_slots, config.overflow, self._emit, self._release, self._late)
        self.metrics.ring_slots.set(config.ring_slots)
        self._stop = threading.Event()
        self._done = threading.Event()  # set when every camera stopped on its own (finite sources, max_frames)
        self._workers_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cams_running = 0
        self._cams_lock = threading.Lock()
        self._admitted = 0
        self._ema_ns = 0.0
        self._last_take = time.monotonic()
        self.camera_state: dict[str, dict[str, Any]] = {
            c.name: {"connected": False, "reconnects": 0, "outages": 0, "outage_s": 0.0, "last_error": None}
            for c in self.cameras
        }

    # -- emission (called by the ring under its lock) ------------------------------------
    def _emit(self, slot: Slot, reason: FailsafeReason | None, payload: object) -> None:
        frame = slot.frame
        assert frame is not None
        now = time.monotonic_ns()
        engine_ms: float | None = None
        if reason is None:
            assert isinstance(payload, WorkResult)
            w = payload
            kind = w.decision.verdict
            reasons = w.decision.reasons
            detections = w.decision.detections
            engine_ms = (w.inferred_ns - w.preprocessed_ns) / 1e6
            latencies = {
                "queue": (w.started_ns - slot.arrived_ns) / 1e6,
                "preprocess": (w.preprocessed_ns - w.started_ns) / 1e6,
                "infer": engine_ms,
                "postprocess": (w.finished_ns - w.inferred_ns) / 1e6,
                "total": (now - frame.captured_ns) / 1e6,
            }
            m = self.metrics
            m.stage("queue", latencies["queue"] / 1e3)
            m.stage("preprocess", latencies["preprocess"] / 1e3)
            m.stage("infer", engine_ms / 1e3)
            m.stage("postprocess", latencies["postprocess"] / 1e3)
        else:
            kind = VerdictKind.FAILSAFE
            detail = f": {payload}" if payload is not None else ""
            reasons = (Reason("failsafe", f"{reason.value}{detail}"),)
            detections = ()
            latencies = {"total": (now - frame.captured_ns) / 1e6}
        self.metrics.stage("total", latencies["total"] / 1e3)
        v = Verdict(
            result_id=new_result_id(),
            part_id=frame.part_id,
            frame_id=frame.frame_id,
            camera=frame.camera,
            verdict=kind,
            reasons=reasons,
            detections=detections,
            captured_ns=frame.captured_ns,
            arrived_ns=slot.arrived_ns,
            decided_ns=now,
            deadline_ns=slot.deadline_ns,
            decided_wall_ns=time.time_ns(),
            latencies_ms=latencies,
            model_id=self.model_id,
            config_version=self.config_version,
            failsafe_reason=reason,
        )
        for s in self.sinks:
            s.submit(v)
        self.stats.record(v, frame.truth.defective if frame.truth is not None else None, engine_ms)
        self.metrics.verdict(frame.camera, kind, reason)
        self.metrics.ring_occupancy.set(self.ring.occupied)
        for listener in self.listeners:
            listener(v)

    def _late(self, slot: Slot, payload: object) -> None:
        self.metrics.late.inc()
        with self.stats.lock:
            self.stats.late_results += 1

    def _release(self, camera: Camera, frame: Frame) -> None:
        try:
            camera.release(frame)
        except Exception:  # a camera that cannot take its buffer back must not stop the line
            log.exception("camera %s failed to release frame %s", camera.name, frame.frame_id)

    # -- threads ---------------------------------------------------------------------------
    def start(self) -> None:
        for s in self.sinks:
            s.start()
        self._threads = [
            threading.Thread(target=self._worker, name="inference-worker", daemon=True),
            threading.Thread(target=self._watchdog, name="deadline-watchdog", daemon=True),
        ]
        self._cams_running = len(self.cameras)
        for cam in self.cameras:
            t = threading.Thread(target=self._acquire, args=(cam,), name=f"camera-{cam.name}", daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def _worker(self) -> None:
        batch = self.inspector.batch
        gather_s = self.config.batch_wait_ms / 1e3 if batch > 1 else 0.0
        while True:
            # Frames with less time left than a typical judgement are left to the watchdog,
            # but at least once a second one is taken anyway to re-measure.
            fresh = time.monotonic() - self._last_take < 1.0
            got = self.ring.take_batch(batch, int(self._ema_ns) if fresh else 0, timeout=0.1, gather_s=gather_s)
            if not got:
                if self._workers_stop.is_set():
                    return
                continue
            self._last_take = time.monotonic()
            frames = [slot.frame for slot, _ in got]
            try:
                results = self.inspector.judge_batch(frames)  # type: ignore[arg-type]
            except Exception as exc:
                self.metrics.engine_errors.inc()
                first = frames[0]
                assert first is not None
                log.error("engine failed on %s frame %s: %s", first.camera, first.frame_id, exc)
                for slot, gen in got:
                    self.ring.fail(slot, gen, FailsafeReason.ENGINE_ERROR, type(exc).__name__)
                continue
            took = results[-1].finished_ns - results[0].started_ns
            self._ema_ns = took if self._ema_ns == 0 else 0.9 * self._ema_ns + 0.1 * took
            for (slot, gen), result in zip(got, results, strict=True):
                self.ring.complete(slot, gen, result)

    def _watchdog(self) -> None:
        while not self._workers_stop.is_set():
            self.ring.wait_deadline(0.05)
            self.ring.expire(time.monotonic_ns())

    def _acquire(self, cam: Camera) -> None:
        state = self.camera_state[cam.name]
        initial, longest = self.reconnect.get(cam.name, (0.5, 10.0))
        backoff = initial
        lost_at: float | None = None
        try:
            while not self._stop.is_set():
                ended = False
                try:
                    cam.open()
                    if lost_at is not None:
                        outage = time.monotonic() - lost_at
                        state["reconnects"] += 1
                        state["outage_s"] += outage
                        self.metrics.reconnects.labels(cam.name).inc()
                        self.metrics.outage.labels(cam.name).inc(outage)
                        log.warning("camera %s reconnected after %.1f s", cam.name, outage)
                        lost_at = None
                    state["connected"] = True
                    self.metrics.connected.labels(cam.name).set(1)
                    backoff = initial
                    ended = self._stream(cam)
                except CameraNodeError as exc:  # a configuration the device refuses: retrying won't help
                    log.error("camera %s cannot be configured: %s", cam.name, exc)
                    state["last_error"] = str(exc)
                    self.fatal_errors.append(f"camera {cam.name}: {exc}")
                    ended = True
                except (CameraLostError, CameraError) as exc:
                    if lost_at is None:
                        lost_at = time.monotonic()
                        state["outages"] += 1
                        log.warning("camera %s lost: %s; reconnecting", cam.name, exc)
                    state["last_error"] = str(exc)
                finally:
                    state["connected"] = False
                    self.metrics.connected.labels(cam.name).set(0)
                    # Buffers still in the ring belong to this device: let them get their
                    # verdicts before closing it underneath them.
                    self.ring.wait_until(lambda: self.ring.holds(cam) == 0, self.config.budget_ms / 1e3 * 2 + 1)
                    try:
                        cam.close()
                    except Exception:
                        log.exception("camera %s failed to close", cam.name)
                if ended or self._stop.is_set():
                    break
                self._stop.wait(backoff)
                backoff = min(backoff * 2, longest)
        finally:
            with self._cams_lock:
                self._cams_running -= 1
                if self._cams_running == 0:
                    self._done.set()

    def _stream(self, cam: Camera) -> bool:
        """Feed one camera's frames into the ring; True when the source ended on its own."""
        gen = cam.frames()
        close = getattr(gen, "close", None)
        try:
            for frame in gen:
                arrived = time.monotonic_ns()
                with self._cams_lock:
                    full = self.max_frames is not None and self._admitted >= self.max_frames
                    if not full:
                        self._admitted += 1
                    last = self.max_frames is not None and self._admitted >= self.max_frames
                if full:  # another camera took the last admission: this frame never enters
                    self._release(cam, frame)
                    self._stop.set()
                    return True
                self.stats.count_frame_in()
                self.metrics.frame_in(cam.name)
                self.ring.put(frame, cam, arrived, arrived + self.budget_ns)
                if last:
                    self._stop.set()
                if self._stop.is_set():
                    return True
            return True
        finally:
            if close is not None:
                close()

    # -- lifecycle ---------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until every camera stopped (finite sources or max_frames) or timeout."""
        return self._done.wait(timeout)

    def stop(self) -> dict[str, Any]:
        """Ordered, bounded shutdown: cameras, drain the ring, workers, sinks. Returns the summary."""
        self._stop.set()
        for t in self._threads[2:]:
            t.join(timeout=self.config.budget_ms / 1e3 * 2 + 5)
        self.ring.close()
        drained = self.ring.wait_until(lambda: self.ring.occupied == 0, self.config.drain_timeout_s)
        if not drained:
            n = self.ring.fail_all(FailsafeReason.SHUTDOWN)
            log.warning("%s frames still in flight at shutdown were decided FAILSAFE", n)
        self._workers_stop.set()
        for t in self._threads[:2]:
            t.join(timeout=5)
        for s in self.sinks:
            s.close()
        for s in self.sinks:
            self.metrics.sink_dropped.labels(s.name).set(s.health().get("dropped", 0))
        summary = self.stats.summary()
        if self.fatal_errors:
            summary["errors"] = list(self.fatal_errors)
        return summary

    def health(self) -> dict[str, Any]:
        return {
            "cameras": self.camera_state,
            "ring": {"slots": self.ring.size, "occupied": self.ring.occupied, "overflows": self.ring.overflows},
            "sinks": [s.health() for s in self.sinks],
            "late_results": self.ring.late_results,
        }
