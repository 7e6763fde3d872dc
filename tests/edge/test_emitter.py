"""The emitter fans a verdict out without holding anything another frame's verdict needs."""

from __future__ import annotations

import threading
import time

import numpy as np

from cameras.base import Frame
from edge.emitter import VerdictEmitter
from edge.metrics import PipelineMetrics
from edge.ring import Decided
from edge.stats import PipelineStats
from edge.verdict import FailsafeReason, Verdict


class Cam:
    name = "cam"


def decided(i: int) -> Decided:
    now = time.monotonic_ns()
    frame = Frame(np.zeros((4, 4), np.uint8), i, f"p{i}", "cam", now)
    return Decided(frame, Cam(), now, now + 10**9, FailsafeReason.DEADLINE, None, None)  # type: ignore[arg-type]


def test_a_slow_subscriber_does_not_hold_back_another_threads_verdict() -> None:
    emitter = VerdictEmitter([], PipelineStats(), PipelineMetrics(["cam"], []), "m", "v1")
    release = threading.Event()
    seen: list[tuple[int, float]] = []

    def slow(v: Verdict, frame: Frame) -> None:
        if v.frame_id == 1:
            release.wait(10)  # holds frame 1's fan-out
        seen.append((v.frame_id, time.monotonic()))

    emitter.subscribe(slow, "slow")
    first = threading.Thread(target=emitter.emit, args=(decided(1),))
    first.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    emitter.emit(decided(2))  # e.g. the watchdog's FAILSAFE for another frame
    took = time.monotonic() - t0
    release.set()
    first.join(10)
    assert took < 2.0 and [i for i, _ in seen] == [2, 1]
    sub = emitter.subscriptions()[0]
    assert sub.calls == 2 and sub.errors == 0 and emitter.emitted == 2


def test_a_failing_subscriber_is_counted_and_the_others_still_get_the_verdict() -> None:
    emitter = VerdictEmitter([], PipelineStats(), PipelineMetrics(["cam"], []), "m", "v1")
    got: list[str] = []

    def broken(v: Verdict, frame: Frame) -> None:
        raise RuntimeError("boom")

    bad = emitter.subscribe(broken, "broken")
    emitter.subscribe(lambda v, f: got.append(v.result_id), "ok")
    v = emitter.emit(decided(1))
    assert got == [v.result_id] and bad.errors == 1
    bad.close()
    emitter.emit(decided(2))
    assert bad.calls == 1 and len(got) == 2
