"""A durable sink's journal: verdicts on disk (SQLite, WAL) until the far side acknowledged them.

One file per sink, used by that sink's writer thread only. Rows keep the verdict record's JSON
exactly as it was emitted, so a verdict replayed after an outage or a restart carries its
original result id and timestamps. `run_id` tells rows written by an earlier run of the service
(replayed) from this run's. The journal is bounded by count and age: what falls off is counted
by the caller as expired.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import SinkError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_wall_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_enqueued ON entries(enqueued_wall_ns);
"""


def open_wal(path: Path, schema: str, what: str, timeout_s: float) -> sqlite3.Connection:
    """A connection for a journal file (the sink's own or the outbox): WAL, autocommit, usable from
    the thread that owns it; a commit survives a crash of the process. Raises SinkError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=timeout_s)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # survives a crash of the process; fsync at checkpoints
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise SinkError(f"{what} {path}: cannot open ({exc})") from exc
    return db


class JournalEntry:
    """One verdict waiting for delivery. `payload_json` is the record exactly as journaled;
    `payload` parses it once, on first use."""

    __slots__ = ("_payload", "attempts", "enqueued_wall_ns", "payload_json", "replayed", "result_id", "seq")

    def __init__(
        self,
        seq: int,
        result_id: str,
        payload_json: str,
        enqueued_wall_ns: int,
        attempts: int = 0,
        replayed: bool = False,  # journaled by an earlier run of the service (delivered after a restart)
    ) -> None:
        self.seq = seq
        self.result_id = result_id
        self.payload_json = payload_json
        self.enqueued_wall_ns = enqueued_wall_ns
        self.attempts = attempts
        self.replayed = replayed
        self._payload: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"JournalEntry(seq={self.seq}, result_id={self.result_id!r}, replayed={self.replayed})"

    @property
    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = json.loads(self.payload_json)
        return self._payload

    @property
    def deadline_wall_ns(self) -> int | None:
        value = self.payload.get("deadline_wall_ns")
        return int(value) if value is not None else None

    def is_late(self, now_wall_ns: int | None = None) -> bool:
        """True when the part's deadline has passed: the verdict must not be actuated as current."""
        deadline = self.deadline_wall_ns
        now = time.time_ns() if now_wall_ns is None else now_wall_ns
        return self.replayed or (deadline is not None and now > deadline)


def insert_entries(db: sqlite3.Connection, rows: Sequence[tuple[str, str, int]], run_id: str) -> list[JournalEntry]:
    """Insert (result_id, payload_json, enqueued_wall_ns) rows into `entries` (a sink's journal or the
    outbox) inside the caller's transaction; their entries."""
    db.executemany(
        "INSERT INTO entries(result_id, payload, enqueued_wall_ns, run_id) VALUES (?, ?, ?, ?)",
        [(r, p, t, run_id) for r, p, t in rows],
    )
    last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
    first = last - len(rows) + 1  # one writer, one transaction: the sequence numbers are contiguous
    return [JournalEntry(first + i, r, p, t) for i, (r, p, t) in enumerate(rows)]


class Journal:
    def __init__(self, path: Path, max_entries: int, max_age_s: float) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.run_id = uuid.uuid4().hex[:12]
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self._db = open_wal(self.path, _SCHEMA, "journal", timeout_s=5.0)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise SinkError(f"journal {self.path} is not open")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def append(self, rows: Sequence[tuple[str, str, int]]) -> list[JournalEntry]:
        """Store (result_id, payload_json, enqueued_wall_ns) rows in one transaction; the entries."""
        db = self.db
        db.execute("BEGIN")
        try:
            entries = insert_entries(db, rows, self.run_id)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return entries

    def pending(self, limit: int) -> list[JournalEntry]:
        rows = self.db.execute(
            "SELECT seq, result_id, payload, enqueued_wall_ns, attempts, run_id FROM entries ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [JournalEntry(s, r, p, t, a, run != self.run_id) for s, r, p, t, a, run in rows]

    def delete(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.db.executemany("DELETE FROM entries WHERE seq = ?", [(s,) for s in seqs])

    def attempted(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.db.executemany("UPDATE entries SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def last_seq(self) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM entries").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def oldest_wall_ns(self) -> int | None:
        row = self.db.execute("SELECT MIN(enqueued_wall_ns) FROM entries").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def expire(self, now_wall_ns: int | None = None, count: int | None = None) -> list[str]:
        """Drop entries older than max_age_s and the oldest beyond max_entries; their result ids.
        `count`: the number of entries, when the caller knows it (saves a scan)."""
        now = time.time_ns() if now_wall_ns is None else now_wall_ns
        cutoff = now - int(self.max_age_s * 1e9)
        db = self.db
        gone: list[str] = []
        oldest = self.oldest_wall_ns()
        if oldest is not None and oldest < cutoff:
            gone = [r for (r,) in db.execute("SELECT result_id FROM entries WHERE enqueued_wall_ns < ?", (cutoff,))]
            db.execute("DELETE FROM entries WHERE enqueued_wall_ns < ?", (cutoff,))
        over = (self.count() if count is None else count - len(gone)) - self.max_entries
        if over > 0:
            rows = db.execute("SELECT seq, result_id FROM entries ORDER BY seq LIMIT ?", (over,)).fetchall()
            self.delete([s for s, _ in rows])
            gone += [r for _, r in rows]
        return gone
