"""`AuditSink`: every verdict into the audit database, as a durable sink (`edge.sinks.durable`).

In the service the audit is a member of the outbox (`edge.sinks.outbox`) like the JSON-lines, MQTT
and OPC UA client sinks: a verdict's JSON is committed once, for all of them, before any of them
sees it, and the audit writer takes the committed entries, makes them rows and inserts them in
one transaction per batch (natural batching: one verdict at line rate, hundreds after a stall).
So after a crash of the service the audit holds every verdict that any subscriber, PLC or file
saw: what the audit had not written yet is still pending for it in the outbox and is written at
the next start (counted as `replayed`). Rows are keyed by result id, so a verdict written twice
is kept once.

While the audit file cannot be written (disk full, locked, unreadable) the entries wait in the
journal, `live` turns False and the writer retries with back-off. A verdict that cannot be made
into a row is dropped, counted and logged (permanent). Retention runs in the writer thread: when
it opens the store, then every `purge_interval_s`. Used on its own (no outbox), the sink keeps a
journal file of its own (`journal_path`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.audit.store import AuditStore, row_from_payload
from edge.errors import PermanentSinkError, SinkError, TransientSinkError
from edge.sinks.durable import DurableSink, JournalConfig
from edge.sinks.journal import JournalEntry

log = logging.getLogger(__name__)

_STORE_ERRORS = (sqlite3.Error, OSError, SinkError)


class AuditSink(DurableSink):
    """A durable sink whose far side is the `AuditStore`."""

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
        super().__init__(name, journal or JournalConfig(batch_size=batch_size), journal_path, queue_size)
        self.store = store
        self.purge_interval_s = purge_interval_s
        self._next_purge = 0.0

    # -- DurableSink hooks (writer thread) -------------------------------------------------------
    def open(self) -> None:
        self.store.open()
        self._purge()

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        try:
            rows = [row_from_payload(e.payload) for e in entries]
        except Exception as exc:  # a record the table cannot hold: never will (the writer isolates it)
            raise PermanentSinkError(f"cannot be made into an audit row: {exc}") from exc
        try:
            self.store.add_rows(rows)
        except _STORE_ERRORS as exc:
            self.store.close()  # reopened (and the schema checked) at the next attempt
            raise TransientSinkError(f"audit {self.store.path}: {exc}") from exc
        if time.monotonic() >= self._next_purge:
            self._purge()
        return None

    def extra_health(self) -> dict[str, Any]:
        return {"path": str(self.store.path), "rows_written": self.store.rows_written}

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + self.purge_interval_s
        try:
            self.store.purge()
        except Exception as exc:  # retention failing must not stop the trail
            log.warning("audit: retention failed: %s", exc)
