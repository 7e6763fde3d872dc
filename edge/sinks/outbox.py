"""The station's outbox: one journal on disk that every durable sink of the service delivers from.

    emitter --submit--> Outbox (bounded queue) --committer thread--> one SQLite transaction:
                            entries(seq, result_id, payload, enqueued_wall_ns, run_id)
                            pending(sink, seq)        a row for every member sink
                        --> every member's writer (the entries, in memory: no read back)
    member writer thread: deliver(entries) to its far side, then delete its pending rows

Why one journal and not one per sink: a verdict is in every member's backlog or in none. With a
journal per sink, a crash between two sinks' appends could leave a verdict in the JSON-lines file
that the MQTT subscribers never got, or in the broker and not in the audit. Here no member sees a
verdict before it is committed for all of them, and after a restart each member delivers what the
outbox still holds for it (flagged `replayed`), so after any crash of the service the JSONL file,
the subscribers, the PLC and the audit end up with the same verdicts. Each verdict's JSON is
written once, however many sinks deliver it.

Members are the durable sinks built with no `journal.path` of their own (`attach_outbox`); a sink
given its own journal file keeps it, outside this guarantee. Each member keeps its own bounds
(`journal.max_entries`, `max_age_s`) over its pending rows; an entry is deleted once no member
waits for it. A member's journal left by an earlier version (`<state_dir>/journal/<sink>.sqlite`)
is moved into the outbox at start, in its order, still flagged as an earlier run's. What waits for
a sink the config no longer has is dropped at start, counted and logged.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import SinkError
from edge.sinks.base import QueuedWriter, hand_off
from edge.sinks.journal import JournalEntry, insert_entries, open_wal
from edge.verdict import Verdict

if TYPE_CHECKING:
    from edge.control import ServiceContext
    from edge.sinks.durable import DurableSink

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_wall_ns INTEGER NOT NULL,
    run_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_seq ON pending(seq);
"""

GC_INTERVAL_S = 1.0  # how often entries no member waits for are deleted


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the outbox file (the committer's, or one member's)."""
    return open_wal(path, _SCHEMA, "outbox", timeout_s=10.0)


def collect(db: sqlite3.Connection) -> int:
    """Delete the entries no member waits for; how many. Members deliver in order, so these are the
    entries below the lowest pending one (all of them when nothing is pending)."""
    cur = db.execute("DELETE FROM entries WHERE seq < COALESCE((SELECT MIN(seq) FROM pending), 1 << 62)")
    return max(0, cur.rowcount)


class OutboxView:
    """One member's part of the outbox, with the reading side of `edge.sinks.journal.Journal` (the
    outbox's committer appends for every member at once). Used by that member's
    writer thread only, on a connection of its own."""

    def __init__(self, path: Path, sink: str, run_id: str, max_entries: int, max_age_s: float) -> None:
        self.path = path
        self.sink = sink
        self.run_id = run_id
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self._db = connect(self.path)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise SinkError(f"outbox {self.path} is not open")
        return self._db

    def close(self) -> None:
        """Close, deleting the entries no member waits for (the members close after the outbox)."""
        if self._db is not None:
            try:
                collect(self._db)
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None

    def pending(self, limit: int) -> list[JournalEntry]:
        rows = self.db.execute(
            "SELECT e.seq, e.result_id, e.payload, e.enqueued_wall_ns, p.attempts, e.run_id "
            "FROM pending p JOIN entries e ON e.seq = p.seq WHERE p.sink = ? ORDER BY p.seq LIMIT ?",
            (self.sink, limit),
        ).fetchall()
        return [JournalEntry(s, r, p, t, a, run != self.run_id) for s, r, p, t, a, run in rows]

    def delete(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.db.executemany("DELETE FROM pending WHERE sink = ? AND seq = ?", [(self.sink, s) for s in seqs])

    def attempted(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.db.executemany(
                "UPDATE pending SET attempts = attempts + 1 WHERE sink = ? AND seq = ?", [(self.sink, s) for s in seqs]
            )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM pending WHERE sink = ?", (self.sink,)).fetchone()[0])

    def last_seq(self) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM pending WHERE sink = ?", (self.sink,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def oldest_wall_ns(self) -> int | None:
        row = self.db.execute(
            "SELECT e.enqueued_wall_ns FROM pending p JOIN entries e ON e.seq = p.seq WHERE p.sink = ? "
            "ORDER BY p.seq LIMIT 1",
            (self.sink,),
        ).fetchone()
        return int(row[0]) if row else None

    def expire(self, now_wall_ns: int | None = None, count: int | None = None) -> list[str]:
        """Drop this member's pending rows older than max_age_s and the oldest beyond max_entries;
        their result ids (the entries themselves go when no member waits for them)."""
        now = time.time_ns() if now_wall_ns is None else now_wall_ns
        cutoff = now - int(self.max_age_s * 1e9)
        gone: list[tuple[int, str]] = []
        oldest = self.oldest_wall_ns()
        if oldest is not None and oldest < cutoff:
            gone = self.db.execute(
                "SELECT p.seq, e.result_id FROM pending p JOIN entries e ON e.seq = p.seq "
                "WHERE p.sink = ? AND e.enqueued_wall_ns < ? ORDER BY p.seq",
                (self.sink, cutoff),
            ).fetchall()
        over = (self.count() if count is None else count) - len(gone) - self.max_entries
        if over > 0:
            skip = {s for s, _ in gone}
            rows = self.db.execute(
                "SELECT p.seq, e.result_id FROM pending p JOIN entries e ON e.seq = p.seq WHERE p.sink = ? "
                "ORDER BY p.seq LIMIT ?",
                (self.sink, over + len(gone)),
            ).fetchall()
            gone += [(s, r) for s, r in rows if s not in skip][:over]
        self.delete([s for s, _ in gone])
        return [r for _, r in gone]


class Outbox(QueuedWriter):
    """The hand-off between the emitter and the durable sinks: one commit per batch for all of them.
    Its health has kind "outbox": a verdict it drops is counted by every member too, which say so."""

    kind = "outbox"

    def __init__(
        self,
        members: Sequence[DurableSink],
        path: Path | None = None,
        queue_size: int = 8192,
        name: str = "outbox",
    ) -> None:
        super().__init__(name, queue_size, "hand-off queue full (outbox writer behind), dropped")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise SinkError(f"outbox: two durable sinks share a name ({sorted(names)}); give each its own `name`")
        self.members = list(members)
        self.path = path
        self.run_id = uuid.uuid4().hex[:12]
        self._db: sqlite3.Connection | None = None
        self.imported = 0
        self.collected = 0
        self.orphaned = 0
        for m in self.members:
            m.join(self)

    # -- Sink protocol ------------------------------------------------------------------------------
    def bind(self, ctx: ServiceContext) -> None:
        if self.path is None:
            self.path = ctx.state_dir / "journal" / "outbox.sqlite"

    def start(self) -> None:
        if self.path is None:
            raise SinkError("outbox: no path (give one or run it in a service)")
        self._db = connect(self.path)
        self._drop_orphans(self._db)
        self.collected += collect(self._db)
        for m in self.members:
            self._import_legacy(m)
        self._start_writer()

    def submit(self, verdict: Verdict) -> bool:
        ok = hand_off(self._queue, (verdict, time.time_ns()), self.counters, self._full)
        if not ok:  # lost for every member: each says so in its own health
            for m in self.members:
                m.counters.count(dropped=1)
        return ok

    def view(self, member: DurableSink) -> OutboxView:
        if self.path is None:
            raise SinkError("outbox: not bound to a path yet")
        return OutboxView(self.path, member.name, self.run_id, member.cfg.max_entries, member.cfg.max_age_s)

    def health(self) -> dict[str, Any]:
        out = self.durable_health()
        out.update({"path": str(self.path), "members": [m.name for m in self.members],
                    "imported": self.imported, "collected": self.collected, "orphaned": self.orphaned})
        return out

    # -- committer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        db = self._db
        assert db is not None
        self._live = True
        gc_at = time.monotonic() + GC_INTERVAL_S
        try:
            while True:
                items, stop = self._take(0.5, 4096)
                if items:
                    self._commit(db, [(v.result_id, v.to_json(), t) for v, t in items])
                if time.monotonic() >= gc_at:
                    self._collect(db)
                    gc_at = time.monotonic() + GC_INTERVAL_S
                if stop:  # `close` queued the marker after everything submitted before it
                    break
        except Exception:
            log.exception("sink %s: committer stopped", self.name)
            self.counters.error("committer stopped")
        finally:
            self._live = False
            left = self._queue.qsize()
            if left:
                log.warning("sink %s: %d verdict(s) not journaled at close", self.name, left)
            try:
                self._collect(db)
            except sqlite3.Error:
                pass
            db.close()
            self._db = None

    def _commit(self, db: sqlite3.Connection, rows: list[tuple[str, str, int]]) -> None:
        """Append the batch and a pending row per member in one transaction, then hand the entries
        to every member. A disk that refuses is retried with back-off (the verdicts wait in memory,
        the queue fills and further verdicts are dropped and counted) until the close deadline."""
        delay = 0.05
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    entries = insert_entries(db, rows, self.run_id)
                    db.executemany(
                        "INSERT INTO pending(sink, seq) VALUES (?, ?)",
                        [(m.name, e.seq) for m in self.members for e in entries],
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                break
            except sqlite3.Error as exc:  # disk full, I/O error, locked past the timeout
                self.counters.error(f"outbox: {exc}")
                if self._close_deadline and time.monotonic() >= self._close_deadline:
                    self.counters.count(dropped=len(rows))
                    for m in self.members:
                        m.counters.count(dropped=len(rows))
                    log.error("sink %s: %d verdict(s) lost: %s unwritable (%s)", self.name, len(rows), self.path, exc)
                    return
                log.warning("sink %s: cannot journal %d verdict(s) (%s); retrying", self.name, len(rows), exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.journaled += len(entries)
        self.counters.count(written=len(entries))
        for m in self.members:
            m.offer(entries)

    def _collect(self, db: sqlite3.Connection) -> None:
        self.collected += collect(db)

    def _drop_orphans(self, db: sqlite3.Connection) -> None:
        """Verdicts waiting for a sink the config no longer has (removed or renamed) would hold the
        outbox's entries forever: they are dropped at start, counted (`orphaned`) and logged."""
        names = {m.name for m in self.members}
        for sink, n in db.execute("SELECT sink, COUNT(*) FROM pending GROUP BY sink").fetchall():
            if sink in names:
                continue
            db.execute("DELETE FROM pending WHERE sink = ?", (sink,))
            self.orphaned += int(n)
            log.warning("outbox %s: %d verdict(s) waited for sink %r, which the config no longer has; "
                        "dropped (a renamed sink starts with an empty backlog)", self.path, n, sink)

    def _import_legacy(self, member: DurableSink) -> None:
        """Move a member's own journal file (an earlier version's) into the outbox, in its order."""
        legacy = member.journal_path
        if legacy is None or not legacy.is_file() or legacy == self.path:
            return
        db = self._db
        assert db is not None
        try:
            old = sqlite3.connect(str(legacy), timeout=10.0)
            try:
                rows = old.execute(
                    "SELECT result_id, payload, enqueued_wall_ns, run_id FROM entries ORDER BY seq"
                ).fetchall()
            finally:
                old.close()
        except sqlite3.Error as exc:
            log.warning("sink %s: journal %s of an earlier version unreadable (%s); left in place",
                        member.name, legacy, exc)
            return
        if rows:
            db.execute("BEGIN IMMEDIATE")
            try:
                for r, p, t, run in rows:
                    cur = db.execute(
                        "INSERT INTO entries(result_id, payload, enqueued_wall_ns, run_id) VALUES (?, ?, ?, ?)",
                        (r, p, t, run),
                    )
                    db.execute("INSERT INTO pending(sink, seq) VALUES (?, ?)", (member.name, cur.lastrowid))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self.imported += len(rows)
            log.warning("sink %s: %d verdict(s) from its journal %s moved into the outbox %s",
                        member.name, len(rows), legacy, self.path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{legacy}{suffix}").unlink(missing_ok=True)


def attach_outbox(sinks: Sequence[Any], path: Path | None = None) -> list[Any]:
    """The sinks as the pipeline runs them: the durable sinks with no journal file of their own
    become members of one `Outbox`, which goes first (started first, closed first: at close it
    commits what is queued and hands it to the members before they stop)."""
    from edge.sinks.durable import DurableSink

    members = [s for s in sinks if isinstance(s, DurableSink) and s.journal_path is None]
    if not members:
        return list(sinks)
    return [Outbox(members, path), *sinks]
