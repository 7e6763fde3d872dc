"""`AuditSink`: every verdict into the audit database, as a durable sink.

It is an `edge.sinks.durable.DurableSink`: `submit()` never blocks (the verdict goes onto the
sink's bounded hand-off queue), the writer thread journals it, then `deliver()` inserts the
journaled batch into the audit database in one transaction. When the audit file cannot be
written (disk full, locked) the verdicts wait in the journal and are delivered when it can;
after a crash the journal's entries are delivered at the next start. Rows are keyed by result
id, so a verdict delivered twice is kept once. Retention runs in the writer thread: once when
it opens the store, then every `purge_interval_s`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.audit.store import AuditStore
from edge.errors import SinkError, TransientSinkError
from edge.sinks.durable import DurableSink, JournalConfig
from edge.sinks.journal import JournalEntry

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(name, JournalConfig(batch_size=batch_size), journal_path, queue_size)
        self.store = store
        self.purge_interval_s = purge_interval_s
        self._next_purge = 0.0

    def open(self) -> None:
        self.store.open()
        self._purge()

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        try:
            self.store.add_verdicts([e.payload for e in entries])
        except (sqlite3.Error, OSError, SinkError) as exc:
            raise TransientSinkError(f"audit {self.store.path}: {exc}") from exc
        if time.monotonic() >= self._next_purge:
            self._purge()
        return None

    def _purge(self) -> None:
        self._next_purge = time.monotonic() + self.purge_interval_s
        try:
            self.store.purge()
        except Exception as exc:  # retention failing must not stop the trail
            log.warning("audit: retention failed: %s", exc)

    def extra_health(self) -> dict[str, Any]:
        return {"path": str(self.store.path), "rows_written": self.store.rows_written}
