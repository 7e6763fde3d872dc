"""The camera supervisor: one acquisition thread per camera feeding the ring.

It opens the camera, streams its frames into the ring with their deadlines, and on an outage
closes it (once the ring has given back every buffer of the device) and reopens it with
exponential back-off. The outage is counted and shown; no frame is invented. A configuration
the device refuses stops that camera for good with a clear error. Each frame passes the gate at
the door first: a station that is halted, or a frame the validity check refuses, is decided
FAILSAFE at once and never reaches the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cameras.base import Camera, Frame
from edge.errors import CameraError, CameraFatalError, CameraLostError
from edge.metrics import PipelineMetrics
from edge.ring import Ring
from edge.stats import PipelineStats
from edge.verdict import FailsafeReason

log = logging.getLogger(__name__)

# (frame) -> None to admit it, or (reason, detail) to decide it FAILSAFE at the door
DoorCheck = Callable[[Frame], "tuple[FailsafeReason, str | None] | None"]


class CameraState:
    """What the supervisor knows of one camera; written by its thread, read by anyone."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.connected = False
        self.reconnects = 0
        self.outages = 0
        self.outage_s = 0.0
        self.frames_in = 0
        self.last_error: str | None = None
        self.fatal: str | None = None

    def update(self, **values: Any) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self, k, v)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "connected": self.connected,
                "reconnects": self.reconnects,
                "outages": self.outages,
                "outage_s": round(self.outage_s, 3),
                "frames_in": self.frames_in,
                "last_error": self.last_error,
                "fatal": self.fatal,
            }


class Admission:
    """Counts frames admitted across cameras against an optional total (`max_frames`)."""

    def __init__(self, max_frames: int | None) -> None:
        self.max_frames = max_frames
        self.admitted = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, bool]:
        """(admitted, was_last)."""
        with self._lock:
            if self.max_frames is not None and self.admitted >= self.max_frames:
                return False, True
            self.admitted += 1
            return True, self.max_frames is not None and self.admitted >= self.max_frames


class CameraSupervisor:
    def __init__(
        self,
        camera: Camera,
        ring: Ring,
        state: CameraState,
        stats: PipelineStats,
        metrics: PipelineMetrics,
        admission: Admission,
        budget_ns: Callable[[], int],
        door: DoorCheck,
        stop: threading.Event,
        release: Callable[[Camera, Frame], None],
        reconnect: tuple[float, float] = (0.5, 10.0),
        drain_s: float = 5.0,
    ) -> None:
        self.camera = camera
        self.ring = ring
        self.state = state
        self.stats = stats
        self.metrics = metrics
        self.admission = admission
        self.budget_ns = budget_ns
        self.door = door
        self.stop = stop
        self.release = release
        self.reconnect = reconnect
        self.drain_s = drain_s

    def run(self) -> None:
        cam, state = self.camera, self.state
        initial, longest = self.reconnect
        backoff = initial
        lost_at: float | None = None
        while not self.stop.is_set():
            ended = False
            try:
                cam.open()
                if lost_at is not None:
                    outage = time.monotonic() - lost_at
                    state.add(reconnects=1, outage_s=outage)
                    self.metrics.reconnects.labels(cam.name).inc()
                    self.metrics.outage.labels(cam.name).inc(outage)
                    log.warning("camera %s reconnected after %.1f s", cam.name, outage)
                    lost_at = None
                state.update(connected=True)
                self.metrics.connected.labels(cam.name).set(1)
                backoff = initial
                ended = self._stream()
            except CameraFatalError as exc:  # refused settings, a source that can never play: retrying won't help
                log.error("camera %s cannot be configured: %s", cam.name, exc)
                state.update(last_error=str(exc), fatal=str(exc))
                ended = True
            except (CameraLostError, CameraError) as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    state.add(outages=1)
                    log.warning("camera %s lost: %s; reconnecting", cam.name, exc)
                state.update(last_error=str(exc))
            finally:
                state.update(connected=False)
                self.metrics.connected.labels(cam.name).set(0)
                # Buffers still in the ring belong to this device: let them get their
                # verdicts before closing it underneath them.
                self.ring.wait_until(lambda: self.ring.holds(cam) == 0, self.drain_s)
                try:
                    cam.close()
                except Exception:
                    log.exception("camera %s failed to close", cam.name)
            if ended or self.stop.is_set():
                break
            self.stop.wait(backoff)
            backoff = min(backoff * 2, longest)

    def _stream(self) -> bool:
        """Feed the camera's frames into the ring; True when the source ended on its own."""
        cam = self.camera
        gen = cam.frames()
        close = getattr(gen, "close", None)
        try:
            for frame in gen:
                arrived = time.monotonic_ns()
                admitted, last = self.admission.take()
                if not admitted:  # another camera took the last admission: this frame never enters
                    self.release(cam, frame)
                    self.stop.set()
                    return True
                self.stats.count_frame_in()
                self.state.add(frames_in=1)
                self.metrics.frame_in(cam.name)
                if frame.error is None:
                    refuse = self.door(frame)
                else:  # an unusable image (undecodable file...) is an invalid frame; else the ring says camera_error
                    refuse = (FailsafeReason.INVALID_FRAME, frame.error) if frame.invalid else None
                self.ring.put(frame, cam, arrived, arrived + self.budget_ns(), refuse)
                if last:
                    self.stop.set()
                if self.stop.is_set():
                    return True
            return True
        finally:
            if close is not None:
                close()
