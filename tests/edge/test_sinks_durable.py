"""The durable sink contract: journal first, deliver, delete on acknowledgement; transient errors
retried with the backlog on disk, permanent ones dropped and counted; replay after a restart
(also after SIGKILL of the process); the journal's bounds; best-effort sinks that survive errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edge.errors import PermanentSinkError, TransientSinkError
from edge.metrics import PipelineMetrics
from edge.sinks.base import BestEffortSink
from edge.sinks.durable import DurableSink, JournalConfig
from edge.sinks.journal import Journal, JournalEntry
from edge.verdict import Verdict, VerdictKind, new_result_id


def verdict(i: int, deadline_in_s: float = 60.0) -> Verdict:
    now = time.monotonic_ns()
    return Verdict(
        result_id=new_result_id(),
        part_id=f"p{i}",
        frame_id=i,
        camera="cam",
        verdict=VerdictKind.REJECT,
        reasons=(),
        detections=(),
        captured_ns=now,
        arrived_ns=now,
        decided_ns=now,
        deadline_ns=now + int(deadline_in_s * 1e9),
        decided_wall_ns=time.time_ns(),
    )


class Link(DurableSink):
    """A far side that can be taken down and brought back (a broker, a PLC)."""

    def __init__(self, journal_path: Path, **cfg: float) -> None:
        super().__init__("link", JournalConfig(retry_initial_s=0.01, retry_max_s=0.05, **cfg), journal_path)
        self.up = threading.Event()
        self.up.set()
        self.refuse: set[str] = set()
        self.received: list[JournalEntry] = []
        self.lock = threading.Lock()

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        if not self.up.is_set():
            raise TransientSinkError("far side down")
        if any(e.result_id in self.refuse for e in entries):
            raise PermanentSinkError("payload refused")  # refuses the whole batch, like a broker would
        with self.lock:
            self.received.extend(entries)
        return None


def wait_for(pred: object, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_outage_grows_the_journal_then_everything_arrives_in_order(tmp_path: Path) -> None:
    sink = Link(tmp_path / "j.sqlite")
    sink.start()
    first = [verdict(i) for i in range(20)]
    for v in first:
        assert sink.submit(v)
    assert wait_for(lambda: len(sink.received) == 20)
    sink.up.clear()  # outage
    during = [verdict(100 + i) for i in range(50)]
    for v in during:
        assert sink.submit(v)
    assert wait_for(lambda: sink.health()["backlog"] == 50 and not sink.health()["live"])
    h = sink.health()
    assert h["errors"] > 0 and h["written"] == 20 and h["last_error"]
    sink.up.set()
    assert wait_for(lambda: len(sink.received) == 70)
    sink.close()
    ids = [e.result_id for e in sink.received]
    assert ids == [v.result_id for v in first + during]  # original ids, original order, once each
    assert sink.received[0].payload["result_id"] == first[0].result_id
    h = sink.health()
    assert h["backlog"] == 0 and h["written"] == 70 and h["dropped"] == 0 and h["replayed"] == 0


def test_permanent_refusal_drops_only_those_and_counts_them(tmp_path: Path) -> None:
    sink = Link(tmp_path / "j.sqlite")
    vs = [verdict(i) for i in range(10)]
    sink.refuse = {vs[4].result_id}
    sink.start()
    for v in vs:
        sink.submit(v)
    assert wait_for(lambda: sink.health()["written"] + sink.health()["dropped"] >= 10)
    sink.close()
    got = [e.result_id for e in sink.received]
    assert got == [v.result_id for v in vs if v.result_id != vs[4].result_id]
    assert sink.health()["dropped"] == 1


def test_unacknowledged_verdicts_survive_a_restart_and_are_flagged_replayed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    sink = Link(path)
    sink.up.clear()
    sink.start()
    vs = [verdict(i, deadline_in_s=0.001) for i in range(5)]
    for v in vs:
        sink.submit(v)
    assert wait_for(lambda: sink.journaled == 5)
    sink.close(timeout=0.2)
    assert sink.health()["backlog"] == 5

    again = Link(path)
    again.start()
    assert wait_for(lambda: len(again.received) == 5)
    again.close()
    assert [e.result_id for e in again.received] == [v.result_id for v in vs]
    assert all(e.replayed and e.is_late() for e in again.received)
    assert again.health()["replayed"] == 5 and again.health()["late"] == 5


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_sinks_durable import Link, verdict
    sink = Link(Path(sys.argv[1]))
    sink.up.clear()  # the far side is down: everything waits in the journal
    sink.start()
    for i in range(200):
        sink.submit(verdict(i))
    while sink.journaled < 200:
        time.sleep(0.01)
    print("journaled", flush=True)
    time.sleep(60)
    """
)


def test_journaled_verdicts_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "journaled"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    sink = Link(path)
    sink.start()
    assert wait_for(lambda: len(sink.received) == 200)
    sink.close()
    assert [e.payload["frame_id"] for e in sink.received] == list(range(200))
    assert all(e.replayed for e in sink.received)


def test_journal_bounds_expire_the_oldest_and_count_them(tmp_path: Path) -> None:
    sink = Link(tmp_path / "j.sqlite", max_entries=10)
    sink.up.clear()
    sink.start()
    vs = [verdict(i) for i in range(25)]
    for v in vs:
        sink.submit(v)
    assert wait_for(lambda: sink.health()["expired"] == 15)
    sink.up.set()
    assert wait_for(lambda: len(sink.received) == 10)
    sink.close()
    assert [e.result_id for e in sink.received] == [v.result_id for v in vs[15:]]

    j = Journal(tmp_path / "age.sqlite", max_entries=100, max_age_s=1.0)
    j.open()
    old = time.time_ns() - 5 * 10**9
    j.append([("old", "{}", old), ("new", "{}", time.time_ns())])
    assert j.expire() == ["old"] and [e.result_id for e in j.pending(10)] == ["new"]
    j.close()


def test_sink_health_is_live_in_metrics(tmp_path: Path) -> None:
    sink = Link(tmp_path / "j.sqlite")
    metrics = PipelineMetrics(["cam"], ["link"])
    metrics.watch_sinks([sink])
    sink.up.clear()
    sink.start()
    for i in range(7):
        sink.submit(verdict(i))
    assert wait_for(lambda: metrics.registry.get_sample_value("edge_sink_backlog", {"sink": "link"}) == 7)
    assert metrics.registry.get_sample_value("edge_sink_live", {"sink": "link"}) == 0
    sink.up.set()
    assert wait_for(lambda: metrics.registry.get_sample_value("edge_sink_written", {"sink": "link"}) == 7)
    assert metrics.registry.get_sample_value("edge_sink_live", {"sink": "link"}) == 1
    sink.close()


class Flaky(BestEffortSink):
    def __init__(self, fail_first: int) -> None:
        super().__init__("flaky", queue_size=4, retry_initial_s=0.001)
        self.fail_left = fail_first
        self.written_ids: list[str] = []
        self.reopened = 0
        self.gate = threading.Event()
        self.gate.set()

    def write(self, v: Verdict) -> None:
        self.gate.wait(10)
        if self.fail_left > 0:
            self.fail_left -= 1
            raise OSError(28, "No space left on device")
        self.written_ids.append(v.result_id)

    def reopen(self) -> None:
        self.reopened += 1


def test_best_effort_sink_survives_write_errors_and_counts_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Flaky(fail_first=2)
    sink.start()
    first = verdict(0)
    sink.submit(first)
    assert wait_for(lambda: sink.health()["written"] == 1)
    assert sink.written_ids == [first.result_id] and sink.reopened == 2 and sink.health()["errors"] == 2
    sink.gate.clear()  # the writer stalls: the queue fills, the rest is dropped and counted
    for i in range(20):
        sink.submit(verdict(i + 1))
    assert sink.health()["dropped"] >= 20 - 4 - 1
    assert any("queue full" in r.getMessage() for r in caplog.records)
    sink.gate.set()
    sink.close()
    h = sink.health()
    assert h["submitted"] + h["dropped"] == 21 and h["written"] == h["submitted"]


class SlowLink(Link):
    """A far side that takes its time to acknowledge (a PLC's ack handshake): `deliver` waits until
    `answer` is set, calling `journal_waiting()` between slices, as the MQTT and OPC UA sinks do."""

    def __init__(self, journal_path: Path) -> None:
        super().__init__(journal_path)
        self.answer = threading.Event()
        self.waiting = threading.Event()

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        self.waiting.set()
        while not self.answer.wait(0.02):
            self.journal_waiting()
        return super().deliver(entries)


def test_what_arrives_during_a_slow_delivery_is_journaled_and_close_still_ends_it(tmp_path: Path) -> None:
    sink = SlowLink(tmp_path / "j.sqlite")
    sink.start()
    first = verdict(0)
    sink.submit(first)
    assert sink.waiting.wait(5)
    later = [verdict(i) for i in range(1, 21)]
    for v in later:
        sink.submit(v)
    assert wait_for(lambda: sink.journaled == 21, 5), sink.journaled  # on disk while the first still waits
    assert sink.backlog() == 21 and not sink.received
    closer = threading.Thread(target=sink.close, kwargs={"timeout": 5.0})
    closer.start()  # the stop marker is taken by journal_waiting() inside the slow delivery
    time.sleep(0.2)
    sink.answer.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [e.result_id for e in sink.received] == [first.result_id] + [v.result_id for v in later]
    assert sink.health()["backlog"] == 0
