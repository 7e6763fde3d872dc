"""The outbox: one journal for every durable sink of a service. A verdict is committed for all
members or for none; each member delivers its own backlog (an outage of one does not hold the
others), keeps its own bounds, and after a restart gets what it had not delivered, flagged
replayed; a journal file of an earlier version is moved in; entries go once no member waits."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from edge.errors import SinkError, TransientSinkError
from edge.sinks.durable import DurableSink, JournalConfig
from edge.sinks.journal import Journal, JournalEntry
from edge.sinks.log import LogSink
from edge.sinks.outbox import Outbox, attach_outbox
from edge.verdict import Verdict
from tests.edge.test_sinks_durable import verdict, wait_for


class Member(DurableSink):
    """A far side that can be down; records what it was given, in order."""

    def __init__(self, name: str, up: bool = True, queue_size: int = 4096, **cfg: float) -> None:
        super().__init__(name, JournalConfig(retry_initial_s=0.01, retry_max_s=0.05, **cfg), None, queue_size)  # type: ignore[arg-type]
        self.up = threading.Event()
        if up:
            self.up.set()
        self.received: list[JournalEntry] = []
        self.delay_s = 0.0

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        if not self.up.is_set():
            raise TransientSinkError("far side down")
        if self.delay_s:
            time.sleep(self.delay_s)
        self.received.extend(entries)
        return None

    def ids(self) -> list[str]:
        return [e.result_id for e in self.received]


def run(outbox: Outbox, *members: DurableSink) -> None:
    outbox.start()
    for m in members:
        m.start()


def stop(outbox: Outbox, *members: DurableSink, timeout: float = 2.0) -> None:
    outbox.close(timeout)
    for m in members:
        m.close(timeout)


def emit(outbox: Outbox, members: tuple[DurableSink, ...], vs: list[Verdict]) -> None:
    """What the emitter does: every sink's submit (members' are no-ops: the outbox journals)."""
    for v in vs:
        assert outbox.submit(v)
        for m in members:
            assert m.submit(v)


def rows(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_every_member_gets_every_verdict_in_order_and_the_outbox_empties(tmp_path: Path) -> None:
    a, b = Member("a"), Member("b")
    outbox = Outbox([a, b], tmp_path / "outbox.sqlite")
    run(outbox, a, b)
    vs = [verdict(i) for i in range(200)]
    emit(outbox, (a, b), vs)
    assert wait_for(lambda: len(a.received) == len(b.received) == 200)
    stop(outbox, a, b)
    ids = [v.result_id for v in vs]
    assert a.ids() == ids and b.ids() == ids
    assert not any(e.replayed for e in a.received)
    assert a.health()["submitted"] == a.health()["written"] == 200 and a.health()["backlog"] == 0
    assert outbox.health()["written"] == 200 and outbox.health()["members"] == ["a", "b"]
    assert rows(tmp_path / "outbox.sqlite", "entries") == 0 and rows(tmp_path / "outbox.sqlite", "pending") == 0


def test_a_member_down_does_not_hold_the_others_and_gets_its_backlog_after_a_restart(tmp_path: Path) -> None:
    up, down = Member("up"), Member("down", up=False)
    outbox = Outbox([up, down], tmp_path / "outbox.sqlite")
    run(outbox, up, down)
    vs = [verdict(i) for i in range(30)]
    emit(outbox, (up, down), vs)
    assert wait_for(lambda: len(up.received) == 30)
    assert wait_for(lambda: down.health()["backlog"] == 30) and not down.health()["live"]
    stop(outbox, up, down, timeout=0.2)
    # the entries stay for the member that has not delivered them, and only for it
    assert rows(tmp_path / "outbox.sqlite", "pending") == 30 and rows(tmp_path / "outbox.sqlite", "entries") == 30
    up2, down2 = Member("up"), Member("down")
    outbox2 = Outbox([up2, down2], tmp_path / "outbox.sqlite")
    run(outbox2, up2, down2)
    assert wait_for(lambda: len(down2.received) == 30)
    stop(outbox2, up2, down2)
    assert down2.ids() == [v.result_id for v in vs] and all(e.replayed for e in down2.received)
    assert up2.received == []  # delivered before the restart: not again
    assert down2.health()["replayed"] == 30
    assert rows(tmp_path / "outbox.sqlite", "entries") == 0


def test_each_member_keeps_its_own_bound(tmp_path: Path) -> None:
    small, big = Member("small", up=False, max_entries=5), Member("big")
    outbox = Outbox([small, big], tmp_path / "outbox.sqlite")
    run(outbox, small, big)
    vs = [verdict(i) for i in range(12)]
    emit(outbox, (small, big), vs)
    assert wait_for(lambda: len(big.received) == 12)
    assert wait_for(lambda: small.health()["expired"] == 7, 10), small.health()
    small.up.set()
    assert wait_for(lambda: len(small.received) == 5)
    stop(outbox, small, big)
    assert small.ids() == [v.result_id for v in vs[7:]]  # the oldest beyond its bound expired, for it only
    assert big.ids() == [v.result_id for v in vs]


def test_offers_lost_to_a_full_member_queue_are_read_back_once_in_order(tmp_path: Path) -> None:
    slow = Member("slow", queue_size=1)
    slow.delay_s = 0.02
    outbox = Outbox([slow], tmp_path / "outbox.sqlite")
    run(outbox, slow)
    vs = [verdict(i) for i in range(100)]
    for v in vs:  # one at a time: many small batches, more than the member's queue holds
        outbox.submit(v)
        time.sleep(0.001)
    assert wait_for(lambda: len(set(slow.ids())) == 100, 30), slow.health()
    stop(outbox, slow)
    assert slow.ids() == [v.result_id for v in vs]  # none twice, none out of order
    assert slow.health()["backlog"] == 0


def test_a_full_outbox_drops_and_counts_for_every_member(tmp_path: Path) -> None:
    a, b = Member("a"), Member("b")
    outbox = Outbox([a, b], tmp_path / "outbox.sqlite", queue_size=4)  # not started: nothing drains
    results = [outbox.submit(verdict(i)) for i in range(10)]
    assert results.count(True) == 4
    assert outbox.health()["dropped"] == 6 and a.health()["dropped"] == b.health()["dropped"] == 6


def test_a_journal_file_of_an_earlier_version_is_moved_in_and_delivered_first(tmp_path: Path) -> None:
    legacy = tmp_path / "journal" / "a.sqlite"
    old = Journal(legacy, 1000, 86400)
    old.open()
    earlier = [verdict(i) for i in range(5)]
    old.append([(v.result_id, v.to_json(), time.time_ns()) for v in earlier])
    old.close()
    a = Member("a")
    outbox = Outbox([a], tmp_path / "journal" / "outbox.sqlite")
    a.journal_path = legacy  # what bind(ctx) sets: the sink's own journal of an earlier version
    run(outbox, a)
    later = [verdict(i) for i in range(5, 8)]
    emit(outbox, (a,), later)
    assert wait_for(lambda: len(a.received) == 8), ([(e.seq, e.replayed) for e in a.received], a.health(), a._last_seq)
    stop(outbox, a)
    assert a.ids() == [v.result_id for v in earlier + later]
    assert [e.replayed for e in a.received] == [True] * 5 + [False] * 3
    assert outbox.health()["imported"] == 5 and not legacy.exists()


def test_attach_outbox_takes_the_durable_sinks_without_a_journal_of_their_own(tmp_path: Path) -> None:
    a, b = Member("a"), Member("b")
    own = Member("own")
    own.journal_path = tmp_path / "own.sqlite"  # its own `journal.path`: stays outside
    log = LogSink("log", 16, include_pass=False, level=20)
    sinks = attach_outbox([a, log, own, b])
    assert isinstance(sinks[0], Outbox) and sinks[1:] == [a, log, own, b]
    assert sinks[0].members == [a, b]
    assert attach_outbox([log]) == [log]
    with pytest.raises(SinkError, match="share a name"):
        Outbox([Member("x"), Member("x")], tmp_path / "o.sqlite")


def test_what_waits_for_a_sink_no_longer_configured_is_dropped_and_counted_at_start(tmp_path: Path) -> None:
    kept, gone = Member("kept"), Member("gone", up=False)
    outbox = Outbox([kept, gone], tmp_path / "outbox.sqlite")
    run(outbox, kept, gone)
    emit(outbox, (kept, gone), [verdict(i) for i in range(10)])
    assert wait_for(lambda: len(kept.received) == 10 and gone.health()["backlog"] == 10)
    stop(outbox, kept, gone, timeout=0.2)
    kept2 = Member("kept")
    outbox2 = Outbox([kept2], tmp_path / "outbox.sqlite")  # "gone" was removed from the config
    run(outbox2, kept2)
    stop(outbox2, kept2)
    assert outbox2.health()["orphaned"] == 10 and kept2.received == []
    assert rows(tmp_path / "outbox.sqlite", "pending") == 0 and rows(tmp_path / "outbox.sqlite", "entries") == 0
