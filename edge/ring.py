"""The frame ring: a fixed set of slots holding camera frames by reference until their verdict.

Every state change happens under one lock, and so does the exactly-once gate: a slot's
`decided` flag flips once, and whoever flips it (inference worker, deadline watchdog, or the
overflow policy) emits that frame's only verdict while still holding the lock. The buffer goes
back to the camera only after that, and only once nobody reads it any more: a frame the
watchdog failed while the engine was still reading it is released when the worker lets go.

No allocation per frame: slots are created once; pending frames are found by scanning the
(small) slot array for the lowest sequence number rather than through a growing queue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from cameras.base import Camera, Frame
from edge.errors import EdgeInspectError
from edge.verdict import FailsafeReason

OverflowPolicy = Literal["failsafe_oldest", "failsafe_newest"]


class SlotState(IntEnum):
    FREE = 0
    PENDING = 1  # waiting for the worker
    INFERRING = 2  # the worker is reading the buffer


@dataclass(eq=False)
class Slot:
    index: int
    state: SlotState = SlotState.FREE
    generation: int = 0
    seq: int = 0
    frame: Frame | None = None
    camera: Camera | None = None
    arrived_ns: int = 0
    deadline_ns: int = 0
    decided: bool = False


# emit(slot, failsafe_reason_or_None, payload): called under the ring lock, exactly once per frame.
EmitFn = Callable[[Slot, "FailsafeReason | None", object], None]
ReleaseFn = Callable[[Camera, Frame], None]
LateFn = Callable[[Slot, object], None]


class Ring:
    """Fixed-size frame ring with an exactly-once verdict gate."""

    def __init__(
        self,
        slots: int,
        overflow: OverflowPolicy,
        emit: EmitFn,
        release: ReleaseFn,
        on_late: LateFn | None = None,
    ) -> None:
        if slots < 2:
            raise EdgeInspectError("the ring needs at least 2 slots")
        self._slots = [Slot(i) for i in range(slots)]
        self._overflow = overflow
        self._emit = emit
        self._release = release
        self._on_late = on_late
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # worker waits for PENDING frames
        self._watch = threading.Condition(self._lock)  # watchdog waits for the next deadline
        self._idle = threading.Condition(self._lock)  # drain waits for an empty ring
        self._seq = 0
        self._closed = False
        self.occupied = 0
        self.overflows = 0
        self.late_results = 0

    @property
    def size(self) -> int:
        return len(self._slots)

    # -- producer side (camera threads) ----------------------------------------------------
    def put(self, frame: Frame, camera: Camera, arrived_ns: int, deadline_ns: int) -> bool:
        """Admit a frame. Returns False when it was decided FAILSAFE at once (ring full with the
        `failsafe_newest` policy, a glitched frame, or a closed ring)."""
        to_release: tuple[Camera, Frame] | None = None
        admitted = True
        with self._lock:
            slot = self._free_slot()
            if frame.error is not None or self._closed:
                reason = FailsafeReason.CAMERA_ERROR if frame.error is not None else FailsafeReason.SHUTDOWN
                self._emit_unslotted(frame, camera, arrived_ns, deadline_ns, reason)
                to_release, admitted = (camera, frame), False
            elif slot is None:
                self.overflows += 1
                victim = self._oldest_pending() if self._overflow == "failsafe_oldest" else None
                if victim is None:
                    self._emit_unslotted(frame, camera, arrived_ns, deadline_ns, FailsafeReason.RING_OVERFLOW)
                    to_release, admitted = (camera, frame), False
                else:
                    victim.decided = True
                    self._emit(victim, FailsafeReason.RING_OVERFLOW, None)
                    assert victim.frame is not None and victim.camera is not None
                    to_release = (victim.camera, victim.frame)
                    self._fill(victim, frame, camera, arrived_ns, deadline_ns)
            else:
                self.occupied += 1
                self._fill(slot, frame, camera, arrived_ns, deadline_ns)
        if to_release is not None:
            self._release(*to_release)
        return admitted

    def _emit_unslotted(
        self, frame: Frame, camera: Camera, arrived_ns: int, deadline_ns: int, reason: FailsafeReason
    ) -> None:
        tmp = Slot(-1, SlotState.FREE, 0, 0, frame, camera, arrived_ns, deadline_ns, True)
        self._emit(tmp, reason, None)

    def _fill(self, slot: Slot, frame: Frame, camera: Camera, arrived_ns: int, deadline_ns: int) -> None:
        self._seq += 1
        slot.generation += 1
        slot.seq = self._seq
        slot.frame = frame
        slot.camera = camera
        slot.arrived_ns = arrived_ns
        slot.deadline_ns = deadline_ns
        slot.decided = False
        slot.state = SlotState.PENDING
        self._work.notify()
        self._watch.notify()

    def _free_slot(self) -> Slot | None:
        for s in self._slots:
            if s.state is SlotState.FREE:
                return s
        return None

    def _oldest_pending(self, min_deadline_ns: int = 0) -> Slot | None:
        best: Slot | None = None
        for s in self._slots:
            if s.state is SlotState.PENDING and s.deadline_ns >= min_deadline_ns and (best is None or s.seq < best.seq):
                best = s
        return best

    # -- worker side ------------------------------------------------------------------------
    def take(self, min_remaining_ns: int = 0, timeout: float | None = None) -> tuple[Slot, int] | None:
        """Oldest pending frame with at least `min_remaining_ns` left before its deadline; marks
        it INFERRING. Frames with less time left are left to the watchdog. None on close/timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closed and not self._has_pending():
                    return None
                slot = self._oldest_pending(time.monotonic_ns() + min_remaining_ns)
                if slot is not None:
                    slot.state = SlotState.INFERRING
                    return slot, slot.generation
                wait = None if end is None else end - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._work.wait(wait if wait is not None else 0.05)

    def take_batch(
        self, max_n: int, min_remaining_ns: int = 0, timeout: float | None = None, gather_s: float = 0.0
    ) -> list[tuple[Slot, int]]:
        """Up to `max_n` pending frames, oldest first (see `take`). After the first, waits at most
        `gather_s` for more to arrive (frames of several cameras triggered together)."""
        first = self.take(min_remaining_ns, timeout)
        if first is None:
            return []
        out = [first]
        end = time.monotonic() + gather_s
        with self._lock:
            while len(out) < max_n:
                slot = self._oldest_pending(time.monotonic_ns() + min_remaining_ns)
                if slot is not None:
                    slot.state = SlotState.INFERRING
                    out.append((slot, slot.generation))
                    continue
                wait = end - time.monotonic()
                if wait <= 0 or self._closed:
                    break
                self._work.wait(wait)
        return out

    def complete(self, slot: Slot, generation: int, payload: object) -> bool:
        """The worker is done with a slot. Emits its verdict unless already decided (then the
        result is late and only recorded). Returns True when this result became the verdict."""
        with self._lock:
            if slot.generation != generation or slot.state is not SlotState.INFERRING:
                raise EdgeInspectError("ring slot completed twice or after reuse")
            won = not slot.decided
            if won:
                slot.decided = True
                self._emit(slot, None, payload)
            else:
                self.late_results += 1
                if self._on_late is not None:
                    self._on_late(slot, payload)
            to_release = self._free(slot)
        self._release(*to_release)
        return won

    def fail(self, slot: Slot, generation: int, reason: FailsafeReason, detail: object) -> None:
        """The worker could not judge the frame (engine error): FAILSAFE unless already decided."""
        with self._lock:
            if slot.generation != generation or slot.state is not SlotState.INFERRING:
                raise EdgeInspectError("ring slot failed after reuse")
            if not slot.decided:
                slot.decided = True
                self._emit(slot, reason, detail)
            to_release = self._free(slot)
        self._release(*to_release)

    def _free(self, slot: Slot) -> tuple[Camera, Frame]:
        assert slot.frame is not None and slot.camera is not None
        out = (slot.camera, slot.frame)
        slot.frame = None
        slot.camera = None
        slot.state = SlotState.FREE
        self.occupied -= 1
        if self.occupied == 0:
            self._idle.notify_all()
        return out

    # -- watchdog side ----------------------------------------------------------------------
    def expire(self, now_ns: int) -> int:
        """FAILSAFE every undecided frame whose deadline has passed; returns how many."""
        return self._fail_where(FailsafeReason.DEADLINE, lambda s: s.deadline_ns <= now_ns)

    def _fail_where(self, reason: FailsafeReason, due: Callable[[Slot], bool]) -> int:
        """Decide FAILSAFE every undecided frame for which due(slot) holds. Pending frames go
        back to their camera at once; a frame the worker is reading goes back when it lets go."""
        releases: list[tuple[Camera, Frame]] = []
        n = 0
        with self._lock:
            for s in self._slots:
                if s.state is SlotState.FREE or s.decided or not due(s):
                    continue
                s.decided = True
                self._emit(s, reason, None)
                n += 1
                if s.state is SlotState.PENDING:
                    releases.append(self._free(s))
        for cam, frame in releases:
            self._release(cam, frame)
        return n

    def next_deadline_ns(self) -> int | None:
        with self._lock:
            return self._next_deadline_locked()

    def _next_deadline_locked(self) -> int | None:
        nxt: int | None = None
        for s in self._slots:
            if s.state is not SlotState.FREE and not s.decided and (nxt is None or s.deadline_ns < nxt):
                nxt = s.deadline_ns
        return nxt

    def wait_deadline(self, max_wait_s: float) -> None:
        """Block until the earliest undecided deadline, a new frame, or max_wait_s."""
        with self._lock:
            nxt = self._next_deadline_locked()
            wait = max_wait_s
            if nxt is not None:
                wait = min(wait, max(0.0, (nxt - time.monotonic_ns()) / 1e9))
            if wait > 0:
                self._watch.wait(wait)

    # -- lifecycle ------------------------------------------------------------------------------
    def _has_pending(self) -> bool:
        return any(s.state is SlotState.PENDING for s in self._slots)

    def holds(self, camera: Camera) -> int:
        with self._lock:
            return sum(1 for s in self._slots if s.state is not SlotState.FREE and s.camera is camera)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (polling on slot releases) until predicate() holds; predicate runs unlocked."""
        end = time.monotonic() + timeout
        while not predicate():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            with self._lock:
                self._idle.wait(min(remaining, 0.02))
        return True

    def close(self) -> None:
        """No new frames; the worker returns None once nothing is pending."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
            self._watch.notify_all()

    def fail_all(self, reason: FailsafeReason) -> int:
        """Decide every undecided frame FAILSAFE now (last step of shutdown)."""
        return self._fail_where(reason, lambda s: True)
