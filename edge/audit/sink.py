"""`AuditSink`: every verdict into the audit database, a durable sink with no journal in front.

The audit database is itself on disk (SQLite, WAL), so a journal ahead of it would write every
verdict twice for the same crash window. `submit()` never blocks: the verdict object goes onto
a bounded hand-off queue (no serialisation on the emitting thread; overflow is dropped and
counted); the writer thread commits whatever is queued straight into the audit database in one
transaction (natural batching: one verdict at line rate, hundreds after a stall). A committed
row survives a crash of the process, exactly as a journal entry would.

The journal is the fallback: while the audit file cannot be written (disk full, locked,
unreadable), batches are spilled to the sink's journal (`<state_dir>/journal/audit.sqlite`),
`live` turns False and the writer retries with back-off, delivering the journal's entries once
the database takes writes again; a journal left by a crash or an earlier version is delivered
first at the next start (counted as `replayed`). Rows are keyed by result id, so a verdict
delivered twice is kept once. A verdict that cannot be made into a row is dropped, counted and
logged (permanent). Retention runs in the writer thread: when it opens the store, then every
`purge_interval_s`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.audit.store import AuditStore, row_from_payload
from edge.errors import SinkError
from edge.sinks.base import QueuedWriter
from edge.sinks.durable import JournalConfig
from edge.sinks.journal import Journal
from edge.verdict import Verdict

if TYPE_CHECKING:
    from edge.control import ServiceContext

log = logging.getLogger(__name__)

_STORE_ERRORS = (sqlite3.Error, OSError, SinkError)


class AuditSink(QueuedWriter):
    """A durable sink whose far side, and store, is the `AuditStore`."""

    def __init__(
        self,
        store: AuditStore,
        name: str = "audit",
        queue_size: int = 65536,
        batch_size: int = 512,
        journal_path: Path | None = None,
        purge_interval_s: float = 3600.0,
        journal: JournalConfig | None = None,
    ) -> None:
        super().__init__(name, queue_size, "hand-off queue full (audit writer behind), dropped")
        self.store = store
        self.batch_size = batch_size
        self.journal_path = journal_path
        self.cfg = journal or JournalConfig(batch_size=batch_size)
        self.purge_interval_s = purge_interval_s
        self._next_purge = 0.0
        self._journal: Journal | None = None
        self._retry_at = 0.0
        self._backoff = 0.0

    # -- Sink protocol --------------------------------------------------------------------------
    def bind(self, ctx: ServiceContext) -> None:
        if self.journal_path is None:
            self.journal_path = ctx.state_dir / "journal" / f"{self.name}.sqlite"

    def start(self) -> None:
        self._start_writer()

    def health(self) -> dict[str, Any]:
        out = self.durable_health()
        out.update({"path": str(self.store.path), "rows_written": self.store.rows_written})
        return out

    # -- writer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        try:
            self._open()
            while True:
                batch, stop = self._take(0.0 if stopping else self._wait_s(), self.batch_size)
                stopping = stopping or stop
                if batch:
                    self._commit(batch)
                if self._on_disk and time.monotonic() >= self._retry_at:
                    self._deliver_journal()
                if self._live and time.monotonic() >= self._next_purge:
                    self._purge()
                if stopping and self._queue.empty() and (not self._on_disk or time.monotonic() >= self._close_deadline):
                    break
                if stopping and self._on_disk:
                    time.sleep(min(0.05, max(0.0, self._retry_at - time.monotonic())))
        except Exception:
            log.exception("sink %s: audit writer stopped", self.name)
            self.counters.error("audit writer stopped")
        finally:
            self._live = False
            if self._on_disk:
                log.warning(
                    "sink %s: %d verdict(s) kept in %s for the next start", self.name, self._on_disk, self.journal_path
                )
            if self._journal is not None:
                self._journal.close()

    def _wait_s(self) -> float:
        if self._on_disk:
            return max(0.0, min(0.5, self._retry_at - time.monotonic()))
        return 0.5

    def _open(self) -> None:
        try:
            self.store.open()
            self._live = True
            self._purge()
        except _STORE_ERRORS as exc:
            self._failed(exc)
        if self.journal_path is not None and self.journal_path.is_file():  # a crash or an outage left some
            journal = self._open_journal()
            self._on_disk = journal.count()
            if self._on_disk:
                log.warning(
                    "sink %s: %d verdict(s) from an earlier run waiting in %s; replaying",
                    self.name,
                    self._on_disk,
                    self.journal_path,
                )
                self._deliver_journal()

    def _commit(self, batch: list[Verdict]) -> None:
        payloads = [v.to_dict() for v in batch]
        if self._live and not self._on_disk:
            rows: list[tuple[Any, ...]] = []
            for p in payloads:
                try:
                    rows.append(row_from_payload(p))
                except Exception as exc:  # a record the table cannot hold: never will (permanent)
                    self._refused(p, exc)
            try:
                self.store.add_rows(rows)
                self.counters.count(written=len(rows))
                self._backoff = 0.0
                return
            except _STORE_ERRORS as exc:
                self._failed(exc)
        self._spill(payloads)

    def _spill(self, payloads: list[dict[str, Any]]) -> None:
        """The database is not taking writes: the batch into the journal, on disk, until it is."""
        rows = [(str(p.get("result_id")), json.dumps(p, separators=(",", ":")), time.time_ns()) for p in payloads]
        delay = 0.05
        while True:
            try:
                self._open_journal().append(rows)
                break
            except Exception as exc:  # the journal is unwritable too: the verdicts are still in memory
                self.counters.error(f"journal: {exc}")
                if time.monotonic() >= self._close_deadline > 0:
                    self.counters.count(dropped=len(rows))
                    log.error(
                        "sink %s: %d verdict(s) lost: neither the audit nor the journal %s is writable (%s)",
                        self.name,
                        len(rows),
                        self.journal_path,
                        exc,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.journaled += len(rows)
        self._on_disk += len(rows)

    def _deliver_journal(self) -> None:
        journal = self._open_journal()
        gone = journal.expire()
        if gone:
            self.expired += len(gone)
            self._on_disk = max(0, self._on_disk - len(gone))
            log.warning(
                "sink %s: %d verdict(s) expired undelivered (journal bound), first %s", self.name, len(gone), gone[0]
            )
        while self._on_disk:
            entries = journal.pending(self.batch_size)
            if not entries:
                self._on_disk = 0
                break
            rows: list[tuple[Any, ...]] = []
            for e in entries:
                try:
                    rows.append(row_from_payload(e.payload))
                except Exception as exc:
                    self._refused(e.payload, exc)
            try:
                if not self._live:
                    self.store.open()
                self.store.add_rows(rows)
            except _STORE_ERRORS as exc:
                journal.attempted([e.seq for e in entries])
                self._failed(exc)
                return
            journal.delete([e.seq for e in entries])
            self._on_disk = max(0, self._on_disk - len(entries))
            self.replayed += sum(1 for e in entries if e.replayed)
            self.counters.count(written=len(rows))
            if not self._live:
                log.info("sink %s: writing to %s again", self.name, self.store.path)
            self._live = True
            self._backoff = 0.0

    def _open_journal(self) -> Journal:
        if self._journal is None:
            if self.journal_path is None:
                raise SinkError(f"sink {self.name}: no journal path (give journal_path or run it in a service)")
            journal = Journal(self.journal_path, self.cfg.max_entries, self.cfg.max_age_s)
            journal.open()
            self._journal = journal
        return self._journal

    def _refused(self, payload: Any, exc: Exception) -> None:
        self.counters.count(dropped=1)
        self.counters.error(f"permanent: {exc}")
        rid = payload.get("result_id") if isinstance(payload, dict) else None
        log.error("sink %s: verdict %s cannot be audited, dropped: %s", self.name, rid, exc)

    def _failed(self, exc: Exception) -> None:
        was_live = self._live
        self._live = False
        self.counters.error(f"{type(exc).__name__}: {exc}")
        if was_live or self._backoff == 0.0:
            log.warning("sink %s: cannot write %s (%s); verdicts wait in the journal", self.name, self.store.path, exc)
        self._backoff = (
            self.cfg.retry_initial_s if self._backoff == 0.0 else min(self._backoff * 2, self.cfg.retry_max_s)
        )
        self._retry_at = time.monotonic() + self._backoff

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + self.purge_interval_s
        try:
            self.store.purge()
        except Exception as exc:  # retention failing must not stop the trail
            log.warning("audit: retention failed: %s", exc)
