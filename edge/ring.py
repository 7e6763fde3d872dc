"""The frame ring: a fixed set of slots holding camera frames by reference until their verdict.

Every state change happens under one lock, and so does the exactly-once gate: a slot's
`decided` flag flips once, and whoever flips it (inference worker, deadline watchdog, or the
overflow policy) owns that frame's only verdict. The verdict itself is built and fanned out
*after* the lock is released (`emit(Decided)`), so a slow sink or subscriber never delays the
gate or the watchdog of another frame. The buffer goes back to the camera only after that
fan-out, and only once nobody reads it any more: each slot counts its readers (`refs`: the
worker while it infers, an emitter while it fans out), and the last one to let go frees it.

No allocation per frame on the slotted path: slots are created once; pending frames are found
by scanning the (small) slot array for the lowest sequence number rather than a growing queue.
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
    DONE = 3  # decided; held until its emitter (and the worker, if it still reads) let go


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
    refs: int = 0  # readers of the frame: the worker while INFERRING, an emitter while fanning out


@dataclass(frozen=True, slots=True)
class Decided:
    """The gate's decision for one frame, fanned out after the ring lock is released."""

    frame: Frame
    camera: Camera
    arrived_ns: int
    deadline_ns: int
    reason: FailsafeReason | None  # None: the worker's result (payload) is the verdict
    payload: object
    slot: Slot | None  # the slot to let go after fan-out; None: release the frame directly


# emit(decided): called once per frame, outside the ring lock, before the buffer is released.
EmitFn = Callable[[Decided], None]
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
    def put(
        self,
        frame: Frame,
        camera: Camera,
        arrived_ns: int,
        deadline_ns: int,
        refuse: tuple[FailsafeReason, str | None] | None = None,
    ) -> bool:
        """Admit a frame. Returns False when it was decided FAILSAFE at once: `refuse` given (an
        invalid frame, a halted station), a glitched frame (`frame.error`), a closed ring, or a
        full ring with the `failsafe_newest` policy."""
        decided: list[Decided] = []
        admitted = True
        with self._lock:
            if refuse is None and frame.error is not None:
                refuse = (FailsafeReason.CAMERA_ERROR, frame.error)
            if refuse is None and self._closed:
                refuse = (FailsafeReason.SHUTDOWN, None)
            slot = self._free_slot() if refuse is None else None
            if refuse is not None:
                decided.append(Decided(frame, camera, arrived_ns, deadline_ns, refuse[0], refuse[1], None))
                admitted = False
            elif slot is None:
                self.overflows += 1
                victim = self._oldest_pending() if self._overflow == "failsafe_oldest" else None
                if victim is None:
                    decided.append(
                        Decided(frame, camera, arrived_ns, deadline_ns, FailsafeReason.RING_OVERFLOW, None, None)
                    )
                    admitted = False
                else:
                    # the victim's frame leaves the slot with its decision; the slot takes the new frame
                    assert victim.frame is not None and victim.camera is not None
                    victim.decided = True
                    decided.append(
                        Decided(
                            victim.frame, victim.camera, victim.arrived_ns, victim.deadline_ns,
                            FailsafeReason.RING_OVERFLOW, None, None,
                        )
                    )
                    self._fill(victim, frame, camera, arrived_ns, deadline_ns)
            else:
                self.occupied += 1
                self._fill(slot, frame, camera, arrived_ns, deadline_ns)
        self._fan_out(decided)
        return admitted

    def _fan_out(self, decided: list[Decided]) -> None:
        """Emit each decision (outside the lock), then let go of its frame."""
        for d in decided:
            try:
                self._emit(d)
            finally:
                if d.slot is None:
                    self._release(d.camera, d.frame)
                else:
                    self._unref(d.slot)

    def _unref(self, slot: Slot) -> None:
        with self._lock:
            slot.refs -= 1
            to_release = self._free(slot) if slot.refs == 0 and slot.state is SlotState.DONE else None
        if to_release is not None:
            self._release(*to_release)

    def _decide(self, slot: Slot, reason: FailsafeReason | None, payload: object) -> Decided:
        """Flip the gate (under the lock): this caller owns the frame's verdict."""
        assert slot.frame is not None and slot.camera is not None and not slot.decided
        slot.decided = True
        slot.refs += 1
        return Decided(slot.frame, slot.camera, slot.arrived_ns, slot.deadline_ns, reason, payload, slot)

    def _fill(self, slot: Slot, frame: Frame, camera: Camera, arrived_ns: int, deadline_ns: int) -> None:
        self._seq += 1
        slot.generation += 1
        slot.seq = self._seq
        slot.frame = frame
        slot.camera = camera
        slot.arrived_ns = arrived_ns
        slot.deadline_ns = deadline_ns
        slot.decided = False
        slot.refs = 0
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
                    slot.refs += 1
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
                    slot.refs += 1
                    out.append((slot, slot.generation))
                    continue
                wait = end - time.monotonic()
                if wait <= 0 or self._closed:
                    break
                self._work.wait(wait)
        return out

    def complete(self, slot: Slot, generation: int, payload: object) -> bool:
        """The worker is done with a slot. Its result becomes the verdict unless the frame was
        already decided (then the result is late and only recorded). True when it became the verdict."""
        return self._worker_done(slot, generation, None, payload)

    def fail(self, slot: Slot, generation: int, reason: FailsafeReason, detail: object) -> None:
        """The worker could not judge the frame (engine error, invalid frame): FAILSAFE unless
        already decided."""
        self._worker_done(slot, generation, reason, detail)

    def _worker_done(self, slot: Slot, generation: int, reason: FailsafeReason | None, payload: object) -> bool:
        decided: list[Decided] = []
        to_release: tuple[Camera, Frame] | None = None
        with self._lock:
            if slot.generation != generation or slot.state is not SlotState.INFERRING:
                raise EdgeInspectError("ring slot completed twice or after reuse")
            won = not slot.decided
            if won:
                decided.append(self._decide(slot, reason, payload))
            elif reason is None:
                self.late_results += 1
                if self._on_late is not None:
                    self._on_late(slot, payload)
            slot.state = SlotState.DONE
            slot.refs -= 1  # the worker lets go
            if slot.refs == 0:
                to_release = self._free(slot)
        if to_release is not None:
            self._release(*to_release)
        self._fan_out(decided)
        return won

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
        """Decide FAILSAFE every undecided frame for which due(slot) holds. A pending frame goes
        back to its camera after its fan-out; one the worker is reading, when the worker lets go."""
        decided: list[Decided] = []
        with self._lock:
            for s in self._slots:
                if s.state in (SlotState.FREE, SlotState.DONE) or s.decided or not due(s):
                    continue
                decided.append(self._decide(s, reason, None))
                if s.state is SlotState.PENDING:
                    s.state = SlotState.DONE
        self._fan_out(decided)
        return len(decided)

    def next_deadline_ns(self) -> int | None:
        with self._lock:
            return self._next_deadline_locked()

    def _next_deadline_locked(self) -> int | None:
        nxt: int | None = None
        for s in self._slots:
            if s.state in (SlotState.PENDING, SlotState.INFERRING) and not s.decided and (
                nxt is None or s.deadline_ns < nxt
            ):
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
