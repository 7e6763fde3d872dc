"""The audit database: one SQLite file in WAL mode.

Tables:
- `verdicts`: one row per verdict (`Verdict.to_dict()`), keyed by result id; inserting the same
  verdict twice (a journal replayed after a crash) keeps the first row.
- `changes`: one row per change made through the API (who, what, before, after, when).
- `evidence`: the evidence files kept for a verdict (by result id), written by the evidence writer.

Writes go through one connection under a lock (any thread); every query opens its own
read connection, so readers never wait for the writer (WAL).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import SinkError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    result_id TEXT PRIMARY KEY,
    decided_wall_ns INTEGER NOT NULL,
    part_id TEXT NOT NULL,
    frame_id INTEGER,
    camera TEXT NOT NULL,
    verdict TEXT NOT NULL,
    failsafe_reason TEXT,
    classes TEXT NOT NULL,
    rules TEXT NOT NULL,
    reasons TEXT NOT NULL,
    detections TEXT NOT NULL,
    model_id TEXT,
    config_version TEXT,
    recipe TEXT,
    decision_set TEXT,
    rules_id TEXT,
    captured_ns INTEGER,
    arrived_ns INTEGER,
    decided_ns INTEGER,
    deadline_ns INTEGER,
    deadline_wall_ns INTEGER,
    margin_ms REAL,
    latency_ms REAL,
    latencies TEXT NOT NULL,
    schema_version INTEGER
);
CREATE INDEX IF NOT EXISTS verdicts_time ON verdicts (decided_wall_ns);
CREATE INDEX IF NOT EXISTS verdicts_camera_time ON verdicts (camera, decided_wall_ns);
CREATE INDEX IF NOT EXISTS verdicts_verdict_time ON verdicts (verdict, decided_wall_ns);
CREATE INDEX IF NOT EXISTS verdicts_part ON verdicts (part_id);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_wall_ns INTEGER NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    before TEXT,
    after TEXT,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS changes_time ON changes (at_wall_ns);
CREATE TABLE IF NOT EXISTS evidence (
    result_id TEXT PRIMARY KEY,
    created_wall_ns INTEGER NOT NULL,
    files TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
"""

VERDICT_COLUMNS = (
    "result_id",
    "decided_wall_ns",
    "part_id",
    "frame_id",
    "camera",
    "verdict",
    "failsafe_reason",
    "classes",
    "rules",
    "reasons",
    "detections",
    "model_id",
    "config_version",
    "recipe",
    "decision_set",
    "rules_id",
    "captured_ns",
    "arrived_ns",
    "decided_ns",
    "deadline_ns",
    "deadline_wall_ns",
    "margin_ms",
    "latency_ms",
    "latencies",
    "schema_version",
)
_INSERT = (
    f"INSERT OR IGNORE INTO verdicts ({', '.join(VERDICT_COLUMNS)}) VALUES ({', '.join('?' for _ in VERDICT_COLUMNS)})"
)
_JSON_COLUMNS = ("reasons", "detections", "latencies")
MAX_PAGE = 500


# columns added after the first release: an audit database written by an earlier version gets
# them (empty for its old rows) when it is opened
_ADDED_COLUMNS = (("decision_set", "TEXT"), ("rules_id", "TEXT"))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(verdicts)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE verdicts ADD COLUMN {name} {kind}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def row_from_payload(p: Mapping[str, Any]) -> tuple[Any, ...]:
    """The `verdicts` row of one `Verdict.to_dict()` payload."""
    ts = p.get("timestamps_ns") or {}
    detections = p.get("detections") or []
    reasons = p.get("reasons") or []
    latencies = p.get("latency_ms") or {}
    classes = sorted({str(d.get("class")) for d in detections})
    rules = sorted({str(r.get("rule")) for r in reasons})
    decided_wall = int(ts.get("decided_wall") or p.get("decided_wall_ns") or time.time_ns())
    return (
        str(p["result_id"]),
        decided_wall,
        str(p.get("part_id", "")),
        p.get("frame_id"),
        str(p.get("camera", "")),
        str(p.get("verdict", "")),
        p.get("failsafe_reason"),
        "," + ",".join(classes) + "," if classes else "",
        ",".join(rules),
        _dumps(reasons),
        _dumps(detections),
        p.get("model_id"),
        p.get("config_version"),
        p.get("recipe"),
        p.get("decision_set"),
        p.get("rules_id"),
        ts.get("captured"),
        ts.get("arrived"),
        ts.get("decided"),
        ts.get("deadline"),
        p.get("deadline_wall_ns"),
        p.get("margin_ms"),
        latencies.get("total"),
        _dumps(latencies),
        p.get("schema"),
    )


@dataclass(frozen=True)
class VerdictQuery:
    """Filters for `AuditStore.verdicts`; times are wall-clock ns, `before` is a result id cursor."""

    since_ns: int | None = None
    until_ns: int | None = None
    camera: str | None = None
    part_id: str | None = None
    verdict: str | None = None
    cls: str | None = None
    failsafe_reason: str | None = None
    before: str | None = None
    limit: int = 50

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.since_ns is not None:
            clauses.append("v.decided_wall_ns >= ?")
            args.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append("v.decided_wall_ns < ?")
            args.append(self.until_ns)
        if self.camera:
            clauses.append("v.camera = ?")
            args.append(self.camera)
        if self.part_id:
            clauses.append("v.part_id = ?")
            args.append(self.part_id)
        if self.verdict:
            clauses.append("v.verdict = ?")
            args.append(self.verdict)
        if self.failsafe_reason:
            clauses.append("v.failsafe_reason = ?")
            args.append(self.failsafe_reason)
        if self.cls:
            clauses.append("instr(v.classes, ?) > 0")
            args.append(f",{self.cls},")
        if self.before:
            clauses.append("v.result_id < ?")
            args.append(self.before)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class AuditStore:
    """The audit database. Thread-safe: one locked writer connection, a reader per query."""

    def __init__(self, path: Path, retention_days: float = 365.0, max_rows: int | None = None) -> None:
        self.path = Path(path)
        self.retention_ns = int(retention_days * 86400e9)
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.rows_written = 0
        self.rows_purged = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a committed row survives a crash of the process
            db.executescript(SCHEMA)
            _add_missing_columns(db)
        except (OSError, sqlite3.Error) as exc:
            raise SinkError(f"audit: cannot open {self.path} ({exc})") from exc
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _writer(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            self.open()
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    # -- writes ----------------------------------------------------------------------------------
    def add_verdicts(self, payloads: Sequence[Mapping[str, Any]]) -> int:
        """Insert verdict payloads (`Verdict.to_dict()`) in one transaction; returns rows added."""
        return self.add_rows([row_from_payload(p) for p in payloads])

    def add_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert `row_from_payload` rows in one transaction; returns rows added."""
        if not rows:
            return 0
        with self._lock:
            db = self._writer()
            before = db.total_changes
            db.execute("BEGIN")
            try:
                db.executemany(_INSERT, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            added = db.total_changes - before
        self.rows_written += added
        return added

    def add_change(
        self,
        who: str,
        what: str,
        before: Any,
        after: Any,
        outcome: str = "applied",
        detail: str | None = None,
        at_wall_ns: int | None = None,
    ) -> int:
        """Record one change made through the API; returns its id."""
        at = time.time_ns() if at_wall_ns is None else at_wall_ns
        with self._lock:
            cur = self._writer().execute(
                "INSERT INTO changes (at_wall_ns, who, what, before, after, outcome, detail) VALUES (?,?,?,?,?,?,?)",
                (at, who, what, _dumps(before), _dumps(after), outcome, detail),
            )
            return int(cur.lastrowid or 0)

    def add_evidence(self, result_id: str, files: Mapping[str, str], size: int, at_wall_ns: int | None = None) -> None:
        at = time.time_ns() if at_wall_ns is None else at_wall_ns
        with self._lock:
            self._writer().execute(
                "INSERT OR REPLACE INTO evidence (result_id, created_wall_ns, files, bytes) VALUES (?,?,?,?)",
                (result_id, at, _dumps(dict(files)), size),
            )

    def remove_evidence(self, result_ids: Iterable[str]) -> None:
        ids = [(r,) for r in result_ids]
        if not ids:
            return
        with self._lock:
            self._writer().executemany("DELETE FROM evidence WHERE result_id = ?", ids)

    def purge(self, now_wall_ns: int | None = None) -> int:
        """Apply retention (age, then row count) to the verdict rows; returns rows deleted."""
        now = time.time_ns() if now_wall_ns is None else now_wall_ns
        deleted = 0
        with self._lock:
            db = self._writer()
            cur = db.execute("DELETE FROM verdicts WHERE decided_wall_ns < ?", (now - self.retention_ns,))
            deleted += cur.rowcount
            if self.max_rows is not None:
                cur = db.execute(
                    "DELETE FROM verdicts WHERE result_id IN (SELECT result_id FROM verdicts "
                    "ORDER BY result_id DESC LIMIT -1 OFFSET ?)",
                    (self.max_rows,),
                )
                deleted += cur.rowcount
        if deleted:
            self.rows_purged += deleted
            log.info("audit: retention deleted %s verdict rows", deleted)
        return deleted

    # -- queries ---------------------------------------------------------------------------------
    def verdicts(self, q: VerdictQuery) -> dict[str, Any]:
        """One page of verdicts, newest first, with `next` (a cursor for the following page)."""
        limit = max(1, min(int(q.limit), MAX_PAGE))
        where, args = q.where()
        sql = (
            "SELECT v.*, e.result_id AS evidence_id FROM verdicts v "
            f"LEFT JOIN evidence e ON e.result_id = v.result_id{where} ORDER BY v.result_id DESC LIMIT ?"
        )
        with self._reader() as db:
            rows = db.execute(sql, [*args, limit + 1]).fetchall()
        items = [self._row(r) for r in rows[:limit]]
        return {"items": items, "next": items[-1]["result_id"] if len(rows) > limit else None}

    def verdict(self, result_id: str) -> dict[str, Any] | None:
        with self._reader() as db:
            row = db.execute(
                "SELECT v.*, e.result_id AS evidence_id FROM verdicts v "
                "LEFT JOIN evidence e ON e.result_id = v.result_id WHERE v.result_id = ?",
                (result_id,),
            ).fetchone()
        return self._row(row) if row is not None else None

    def count(self, q: VerdictQuery | None = None) -> int:
        where, args = (q or VerdictQuery()).where()
        with self._reader() as db:
            return int(db.execute(f"SELECT count(*) FROM verdicts v{where}", args).fetchone()[0])

    def result_ids(self) -> set[str]:
        with self._reader() as db:
            return {r[0] for r in db.execute("SELECT result_id FROM verdicts")}

    def changes(self, what: str | None = None, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if what:
            clauses.append("what = ?")
            args.append(what)
        if before_id is not None:
            clauses.append("id < ?")
            args.append(before_id)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._reader() as db:
            rows = db.execute(
                f"SELECT * FROM changes{where} ORDER BY id DESC LIMIT ?", [*args, max(1, min(limit, MAX_PAGE))]
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["before"] = json.loads(d["before"]) if d["before"] is not None else None
            d["after"] = json.loads(d["after"]) if d["after"] is not None else None
            out.append(d)
        return out

    def change(self, change_id: int) -> dict[str, Any] | None:
        with self._reader() as db:
            row = db.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["before"] = json.loads(d["before"]) if d["before"] is not None else None
        d["after"] = json.loads(d["after"]) if d["after"] is not None else None
        return d

    def evidence(self, result_id: str) -> dict[str, Any] | None:
        with self._reader() as db:
            row = db.execute("SELECT * FROM evidence WHERE result_id = ?", (result_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["files"] = json.loads(d["files"])
        return d

    def iter_range(self, since_ns: int | None, until_ns: int | None, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Every verdict in [since, until), oldest first, read in chunks (for the CSV export)."""
        last = ""
        base = VerdictQuery(since_ns=since_ns, until_ns=until_ns)
        where, args = base.where()
        joiner = " AND " if where else " WHERE "
        while True:
            with self._reader() as db:
                rows = db.execute(
                    "SELECT v.*, e.result_id AS evidence_id FROM verdicts v LEFT JOIN evidence e "
                    f"ON e.result_id = v.result_id{where}{joiner}v.result_id > ? ORDER BY v.result_id LIMIT ?",
                    [*args, last, chunk],
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield self._row(r)
            last = rows[-1]["result_id"]

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for k in _JSON_COLUMNS:
            d[k] = json.loads(d[k])
        d["classes"] = [c for c in d["classes"].split(",") if c]
        d["rules"] = [r for r in d["rules"].split(",") if r]
        return d
