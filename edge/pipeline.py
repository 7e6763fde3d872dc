"""The running pipeline: acquisition threads, the inference worker, the deadline watchdog.

    camera thread(s) --door--> Ring --take--> worker: letterbox -> infer -> decode -> decide
                                 ^                                   |
                 watchdog: FAILSAFE at the deadline     complete(): gate -> emit -> release

Each frame's verdict is decided exactly once at the ring's gate, by whoever gets there first;
the `VerdictEmitter` then builds the immutable `Verdict` and fans it out (sinks, stats, metrics,
subscribers) outside the ring's lock and before the buffer goes back to the camera. No thread
or task is created per frame. The pieces: `edge.acquisition` (cameras), `edge.inspector` (one
frame through the engine), `edge.emitter` (the verdict and its fan-out), `edge.ring` (the gate).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cameras.base import Camera, Frame
from edge.acquisition import Admission, CameraState, CameraSupervisor
from edge.config import PipelineConfig
from edge.emitter import Subscription, VerdictEmitter, VerdictListener
from edge.errors import EdgeInspectError, InvalidFrameError
from edge.inspector import DecodeSettings, Inspector, WorkResult
from edge.metrics import PipelineMetrics
from edge.ring import Decided, Ring, Slot
from edge.sinks.base import Sink
from edge.stats import PipelineStats
from edge.verdict import FailsafeReason

log = logging.getLogger(__name__)

__all__ = ["DecodeSettings", "Inspector", "Pipeline", "VerdictListener", "WorkResult"]

# (frame) -> None when it can be judged, else why not ("truncated JPEG", "10x10 px, expected 640x640")
FrameCheck = Callable[[Frame], "str | None"]

MODES = ("running", "halted", "single")


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
        frame_check: FrameCheck | None = None,
    ) -> None:
        self.cameras = list(cameras)
        self.inspector = inspector
        self.sinks = list(sinks)
        self.config = config
        self.metrics = metrics
        self.stats = stats or PipelineStats()
        self.config_version = config_version
        self.reconnect = reconnect or {}
        self.max_frames = max_frames
        self.frame_check = frame_check
        self.budget_ns = int(config.budget_ms * 1e6)
        self.emitter = VerdictEmitter(self.sinks, self.stats, metrics, inspector.info.model_id, config_version)
        self.emitter.rules_in_force = lambda: self.inspector.rules
        self.ring = Ring(config.ring_slots, config.overflow, self._emit, self._release, self._late)
        self.metrics.ring_slots.set(config.ring_slots)
        self.metrics.watch_sinks(self.sinks)
        self.camera_states = {c.name: CameraState(c.name) for c in self.cameras}
        self._admission = Admission(max_frames)
        self._stop = threading.Event()
        self._done = threading.Event()  # set when every camera stopped on its own (finite sources, max_frames)
        self._workers_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cams_running = 0
        self._cams_lock = threading.Lock()
        self._ema_ns = 0.0
        self._last_take = time.monotonic()
        self._mode = "running"
        self._single_left = 0
        self._mode_lock = threading.Lock()
        self.worker_beat_ns = time.monotonic_ns()
        self.watchdog_beat_ns = time.monotonic_ns()
        self._worker_loops = 0
        self.started = False

    @property
    def model_id(self) -> str:
        return self.emitter.model_id

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, listener: VerdictListener, name: str) -> Subscription:
        """Call listener(verdict, frame) once per verdict, after the gate, outside the ring lock,
        before the frame's buffer is released (copy what you need; never block)."""
        return self.emitter.subscribe(listener, name)

    # -- mode: running / halted / single ------------------------------------------------------
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, single: int = 1) -> None:
        if mode not in MODES:
            raise EdgeInspectError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        with self._mode_lock:
            self._mode = mode
            self._single_left = max(1, int(single)) if mode == "single" else 0
        log.info("pipeline mode: %s%s", mode, f" ({single} frame(s))" if mode == "single" else "")

    def _door(self, frame: Frame) -> tuple[FailsafeReason, str | None] | None:
        """Decided at the door (camera thread): a halted station, an invalid frame."""
        if self._mode != "running":
            with self._mode_lock:
                if self._mode == "halted":
                    return FailsafeReason.HALTED, "station halted"
                if self._mode == "single":
                    self._single_left -= 1
                    if self._single_left <= 0:
                        self._mode = "halted"
        if self.frame_check is not None:
            why = self.frame_check(frame)
            if why is not None:
                return FailsafeReason.INVALID_FRAME, why
        return None

    # -- recipes: swap the inspector between frames --------------------------------------------
    def swap_inspector(self, inspector: Inspector, recipe: str, timeout: float = 10.0) -> Inspector:
        """Judge the next frames with `inspector`; returns the old one once the worker no longer
        uses it (close its engine then)."""
        old = self.inspector
        loops = self._worker_loops
        self.inspector = inspector
        self.emitter.model_id = inspector.info.model_id
        self.emitter.recipe = recipe
        end = time.monotonic() + timeout
        while self.started and self._worker_loops <= loops + 1 and time.monotonic() < end:
            time.sleep(0.01)
        return old

    # -- emission (the ring calls these outside its lock) --------------------------------------
    def _emit(self, d: Decided) -> None:
        self.emitter.emit(d)
        self.metrics.ring_occupancy.set(self.ring.occupied)

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
    def start(self, before_cameras: Callable[[], None] | None = None) -> None:
        """Sinks, then the worker and the watchdog, then `before_cameras()` (if given), then the
        camera threads: nothing is captured before everything downstream is listening."""
        for s in self.sinks:
            s.start()
        self._threads = [
            threading.Thread(target=self._worker, name="inference-worker", daemon=True),
            threading.Thread(target=self._watchdog, name="deadline-watchdog", daemon=True),
        ]
        self._cams_running = len(self.cameras)
        for cam in self.cameras:
            sup = CameraSupervisor(
                cam,
                self.ring,
                self.camera_states[cam.name],
                self.stats,
                self.metrics,
                self._admission,
                lambda: self.budget_ns,
                self._door,
                self._stop,
                self._release,
                self.reconnect.get(cam.name, (0.5, 10.0)),
                drain_s=self.config.budget_ms / 1e3 * 2 + 1,
            )
            t = threading.Thread(target=self._acquire, args=(sup,), name=f"camera-{cam.name}", daemon=True)
            self._threads.append(t)
        self.started = True
        for t in self._threads[:2]:
            t.start()
        if before_cameras is not None:
            before_cameras()
        for t in self._threads[2:]:
            t.start()

    def _acquire(self, sup: CameraSupervisor) -> None:
        try:
            sup.run()
        finally:
            with self._cams_lock:
                self._cams_running -= 1
                if self._cams_running == 0:
                    self._done.set()

    def _worker(self) -> None:
        while True:
            self.worker_beat_ns = time.monotonic_ns()
            self._worker_loops += 1
            inspector = self.inspector
            batch = inspector.batch
            gather_s = self.config.batch_wait_ms / 1e3 if batch > 1 else 0.0
            # Frames with less time left than a typical judgement are left to the watchdog,
            # but at least once a second one is taken anyway to re-measure.
            fresh = time.monotonic() - self._last_take < 1.0
            got = self.ring.take_batch(batch, int(self._ema_ns) if fresh else 0, timeout=0.1, gather_s=gather_s)
            if not got:
                if self._workers_stop.is_set():
                    return
                continue
            self._last_take = time.monotonic()
            self._judge(inspector, got)

    def _judge(self, inspector: Inspector, got: list[tuple[Slot, int]]) -> None:
        frames: list[Frame] = [slot.frame for slot, _ in got]  # type: ignore[misc]
        try:
            results = inspector.judge_batch(frames)
        except InvalidFrameError as exc:
            if len(got) > 1:  # find which frame of the batch it was: judge them one by one
                for item in got:
                    self._judge(inspector, [item])
                return
            self.ring.fail(got[0][0], got[0][1], FailsafeReason.INVALID_FRAME, str(exc))
            return
        except Exception as exc:
            self.metrics.engine_errors.inc()
            log.error("engine failed on %s frame %s: %s", frames[0].camera, frames[0].frame_id, exc)
            for slot, gen in got:
                self.ring.fail(slot, gen, FailsafeReason.ENGINE_ERROR, type(exc).__name__)
            return
        took = results[-1].finished_ns - results[0].started_ns
        self._ema_ns = took if self._ema_ns == 0 else 0.9 * self._ema_ns + 0.1 * took
        for (slot, gen), result in zip(got, results, strict=True):
            self.ring.complete(slot, gen, result)

    def _watchdog(self) -> None:
        while not self._workers_stop.is_set():
            self.watchdog_beat_ns = time.monotonic_ns()
            self.ring.wait_deadline(0.05)
            self.ring.expire(time.monotonic_ns())

    # -- lifecycle ---------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until every camera stopped (finite sources or max_frames) or timeout."""
        return self._done.wait(timeout)

    @property
    def fatal_errors(self) -> list[str]:
        return [f"camera {s.name}: {s.fatal}" for s in self.camera_states.values() if s.fatal]

    def stop(self, sink_timeout: float = 5.0) -> dict[str, Any]:
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
            s.close(sink_timeout)
        self.started = False
        summary = self.stats.summary()
        summary["sinks"] = self.sink_health()
        errors = list(self.fatal_errors)
        warnings: list[str] = []
        for h in summary["sinks"]:
            if h.get("kind") == "outbox":  # what it dropped, each member counted and reports
                continue
            lost = int(h.get("dropped", 0))
            if lost and h.get("kind") == "durable":
                errors.append(f"sink {h['name']}: {lost} verdict(s) lost ({h.get('last_error') or 'dropped'})")
            elif lost:
                warnings.append(f"sink {h['name']}: {lost} verdict(s) dropped (queue full or write errors)")
            if h.get("kind") == "durable" and h.get("backlog"):
                warnings.append(f"sink {h['name']}: {h['backlog']} verdict(s) kept in its journal for the next start")
        if errors:
            summary["errors"] = errors
        if warnings:
            summary["warnings"] = warnings
        return summary

    def sink_health(self) -> list[dict[str, Any]]:
        out = []
        for s in self.sinks:
            try:
                out.append(s.health())
            except Exception as exc:
                out.append({"name": s.name, "live": False, "last_error": f"health() failed: {exc}"})
        return out

    def worker_health(self) -> dict[str, Any]:
        """The inference worker's and the watchdog's liveness: cheap (no statistics, no sinks)."""
        now = time.monotonic_ns()
        return {
            "inference_heartbeat_age_s": round((now - self.worker_beat_ns) / 1e9, 3) if self.started else None,
            "watchdog_heartbeat_age_s": round((now - self.watchdog_beat_ns) / 1e9, 3) if self.started else None,
            "inference_alive": len(self._threads) > 0 and self._threads[0].is_alive(),
            "watchdog_alive": len(self._threads) > 1 and self._threads[1].is_alive(),
        }

    def health(self) -> dict[str, Any]:
        return {
            "mode": self._mode,
            "cameras": {name: s.as_dict() for name, s in self.camera_states.items()},
            "ring": {
                "slots": self.ring.size,
                "occupied": self.ring.occupied,
                "overflows": self.ring.overflows,
                "late_results": self.ring.late_results,
            },
            "workers": self.worker_health(),
            "sinks": self.sink_health(),
            "subscribers": [
                {"name": s.name, "calls": s.calls, "errors": s.errors} for s in self.emitter.subscriptions()
            ],
        }
