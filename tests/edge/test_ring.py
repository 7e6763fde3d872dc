from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cameras.base import Frame
from edge.ring import Decided, Ring
from edge.verdict import FailsafeReason


class Source:
    """Minimal Camera for ring unit tests: counts releases per frame."""

    name = "t"

    def __init__(self) -> None:
        self.released: Counter[int] = Counter()
        self.lock = threading.Lock()

    def open(self) -> None: ...
    def close(self) -> None: ...
    def frames(self) -> Iterator[Frame]:
        return iter(())

    def release(self, frame: Frame) -> None:
        with self.lock:
            self.released[frame.frame_id] += 1

    def health(self) -> dict[str, Any]:
        return {}


def frame(i: int, error: str | None = None) -> Frame:
    return Frame(np.zeros((2, 2), np.uint8), i, f"p{i}", "t", time.monotonic_ns(), error=error)


class Log:
    def __init__(self, cam: Source) -> None:
        self.events: list[tuple[int, FailsafeReason | None, bool]] = []
        self.cam = cam

    def emit(self, d: Decided) -> None:
        # the buffer must not have been given back before its verdict
        released_before = self.cam.released[d.frame.frame_id] > 0
        self.events.append((d.frame.frame_id, d.reason, released_before))


def make(slots: int = 4, overflow: str = "failsafe_oldest") -> tuple[Ring, Source, Log]:
    cam = Source()
    log = Log(cam)
    return Ring(slots, overflow, log.emit, lambda c, f: c.release(f)), cam, log  # type: ignore[arg-type]


def far() -> int:
    return time.monotonic_ns() + 10**12


def test_put_take_complete_emits_once_then_releases() -> None:
    ring, cam, log = make()
    assert ring.put(frame(1), cam, 0, far())
    got = ring.take(timeout=1)
    assert got is not None
    slot, gen = got
    assert ring.complete(slot, gen, "result") is True
    assert log.events == [(1, None, False)]
    assert cam.released[1] == 1 and ring.occupied == 0


def test_overflow_fails_oldest_pending_and_reuses_slot() -> None:
    ring, cam, log = make(slots=2)
    for i in range(3):
        ring.put(frame(i), cam, 0, far())
    assert log.events == [(0, FailsafeReason.RING_OVERFLOW, False)]
    assert cam.released[0] == 1 and ring.occupied == 2 and ring.overflows == 1
    ids = []
    for _ in range(2):
        got = ring.take(timeout=1)
        assert got is not None
        assert got[0].frame is not None
        ids.append(got[0].frame.frame_id)
        ring.complete(got[0], got[1], None)
    assert ids == [1, 2]


def test_overflow_newest_policy() -> None:
    ring, cam, log = make(slots=2, overflow="failsafe_newest")
    for i in range(3):
        ring.put(frame(i), cam, 0, far())
    assert log.events == [(2, FailsafeReason.RING_OVERFLOW, False)]
    assert cam.released[2] == 1


def test_overflow_skips_frame_being_inferred() -> None:
    ring, cam, log = make(slots=2)
    ring.put(frame(0), cam, 0, far())
    ring.put(frame(1), cam, 0, far())
    got = ring.take(timeout=1)  # frame 0 now INFERRING
    assert got is not None
    ring.put(frame(2), cam, 0, far())
    assert log.events == [(1, FailsafeReason.RING_OVERFLOW, False)]
    ring.complete(got[0], got[1], None)
    assert [e[0] for e in log.events] == [1, 0]


def test_glitched_frame_is_failsafe_at_once() -> None:
    ring, cam, log = make()
    assert ring.put(frame(7, error="incomplete buffer"), cam, 0, far()) is False
    assert log.events == [(7, FailsafeReason.CAMERA_ERROR, False)]
    assert cam.released[7] == 1 and ring.occupied == 0


def test_deadline_pending_frame_failsafe_and_released() -> None:
    ring, cam, log = make()
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, now + 1_000_000)
    assert ring.expire(now) == 0
    assert ring.expire(now + 2_000_000) == 1
    assert log.events == [(1, FailsafeReason.DEADLINE, False)]
    assert cam.released[1] == 1 and ring.occupied == 0
    assert ring.take(timeout=0.05) is None


def test_deadline_while_inferring_releases_only_when_worker_done() -> None:
    ring, cam, log = make()
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, now + 1_000_000)
    got = ring.take(timeout=1)
    assert got is not None
    ring.expire(now + 2_000_000)
    assert log.events == [(1, FailsafeReason.DEADLINE, False)]
    assert cam.released[1] == 0  # the engine may still be reading it
    assert ring.complete(got[0], got[1], "late") is False
    assert ring.late_results == 1 and cam.released[1] == 1
    assert len(log.events) == 1


def test_take_skips_frames_without_enough_time() -> None:
    ring, cam, _ = make()
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, now + 1_000_000)  # 1 ms left
    ring.put(frame(2), cam, now, now + 10**10)
    got = ring.take(min_remaining_ns=50_000_000, timeout=0.5)
    assert got is not None and got[0].frame is not None and got[0].frame.frame_id == 2


def test_fail_all_on_shutdown() -> None:
    ring, cam, log = make()
    for i in range(3):
        ring.put(frame(i), cam, 0, far())
    ring.close()
    assert ring.fail_all(FailsafeReason.SHUTDOWN) == 3
    assert sorted(cam.released) == [0, 1, 2] and ring.occupied == 0
    assert ring.put(frame(9), cam, 0, far()) is False
    assert log.events[-1] == (9, FailsafeReason.SHUTDOWN, False)


def test_concurrent_exactly_one_verdict_per_frame() -> None:
    ring, cam, log = make(slots=4)
    n = 3000
    stop = threading.Event()

    def producer() -> None:
        for i in range(n):
            now = time.monotonic_ns()
            ring.put(frame(i), cam, now, now + 2_000_000)  # 2 ms budget
            if i % 7 == 0:
                time.sleep(0.0002)
        stop.set()

    def worker() -> None:
        while not (stop.is_set() and ring.occupied == 0):
            got = ring.take(timeout=0.01)
            if got is None:
                continue
            if got[0].seq % 3 == 0:
                time.sleep(0.003)  # some results come late
            ring.complete(got[0], got[1], None)

    def watchdog() -> None:
        while not (stop.is_set() and ring.occupied == 0):
            ring.wait_deadline(0.01)
            ring.expire(time.monotonic_ns())

    threads = [threading.Thread(target=t) for t in (producer, worker, watchdog)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = Counter(e[0] for e in log.events)
    assert len(ids) == n and set(ids.values()) == {1}
    assert set(cam.released.values()) == {1} and len(cam.released) == n
    assert not any(e[2] for e in log.events), "a buffer went back before its verdict"
    kinds = Counter(e[1] for e in log.events)
    assert kinds[None] > 0 and ring.occupied == 0
    assert sum(kinds.values()) == n


def test_ring_needs_two_slots() -> None:
    with pytest.raises(Exception, match="2 slots"):
        make(slots=1)


def test_fan_out_runs_outside_the_ring_lock() -> None:
    """A verdict's fan-out must not hold the ring: the watchdog and cameras go on meanwhile."""
    cam = Source()
    held: list[bool] = []
    ring: Ring

    def emit(d: Decided) -> None:
        free = ring._lock.acquire(blocking=False)
        held.append(not free)
        if free:
            ring._lock.release()

    ring = Ring(4, "failsafe_oldest", emit, lambda c, f: c.release(f))  # type: ignore[arg-type]
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, far())
    got = ring.take(timeout=1)
    assert got is not None
    ring.complete(got[0], got[1], None)
    ring.put(frame(2), cam, now, now + 1)
    ring.expire(now + 10)
    ring.put(frame(3, error="glitch"), cam, now, far())
    assert held == [False, False, False]


def test_slow_fan_out_does_not_delay_another_frames_deadline() -> None:
    """One frame's slow subscriber must not hold back the watchdog's verdict for another."""
    cam = Source()
    decided_at: dict[int, int] = {}
    gate = threading.Event()

    def emit(d: Decided) -> None:
        decided_at[d.frame.frame_id] = time.monotonic_ns()
        if d.frame.frame_id == 1:
            gate.wait(5)  # a slow consumer of frame 1's verdict

    ring = Ring(4, "failsafe_oldest", emit, lambda c, f: c.release(f))  # type: ignore[arg-type]
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, far())
    ring.put(frame(2), cam, now, now + 20_000_000)
    got = ring.take(timeout=1)
    assert got is not None and got[0].frame is not None and got[0].frame.frame_id == 1
    worker = threading.Thread(target=ring.complete, args=(got[0], got[1], None))
    worker.start()
    while 1 not in decided_at:
        time.sleep(0.001)
    t0 = time.monotonic_ns()
    while ring.expire(time.monotonic_ns()) == 0:
        ring.wait_deadline(0.01)
    waited_s = (time.monotonic_ns() - t0) / 1e9
    gate.set()
    worker.join(5)
    assert 2 in decided_at and waited_s < 2.0  # frame 2 failed at its deadline while frame 1 was still emitting
    assert cam.released[1] == 1 and cam.released[2] == 1


def test_buffer_held_until_watchdog_fan_out_finishes_even_if_worker_lets_go() -> None:
    """Watchdog decides an INFERRING frame; the worker finishes during the watchdog's fan-out:
    the buffer goes back only after the fan-out (subscribers may still read it)."""
    cam = Source()
    in_fan_out = threading.Event()
    finish = threading.Event()
    seen_released: list[int] = []

    def emit(d: Decided) -> None:
        in_fan_out.set()
        finish.wait(5)
        seen_released.append(cam.released[d.frame.frame_id])

    ring = Ring(4, "failsafe_oldest", emit, lambda c, f: c.release(f))  # type: ignore[arg-type]
    now = time.monotonic_ns()
    ring.put(frame(1), cam, now, now + 10**9)
    got = ring.take(timeout=1)
    assert got is not None
    watchdog = threading.Thread(target=ring.expire, args=(now + 2 * 10**9,))
    watchdog.start()
    assert in_fan_out.wait(5)
    assert ring.complete(got[0], got[1], "late") is False  # the worker lets go mid fan-out
    assert cam.released[1] == 0
    finish.set()
    watchdog.join(5)
    assert seen_released == [0] and cam.released[1] == 1 and ring.occupied == 0
