"""`AuditSink`: the pipeline's verdicts into the audit database, in batched transactions.

`submit()` never blocks: the verdict goes onto a bounded queue (overflow dropped and counted);
one writer thread takes everything waiting (up to `batch_size`), turns it into rows and
commits them in one transaction, so a verdict is on disk a few milliseconds after its
emission and a crash of the process loses at most what was still queued. The same thread
applies retention once at start and then every `purge_interval_s`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from edge.audit.store import AuditStore
from edge.verdict import Verdict

log = logging.getLogger(__name__)

_STOP = object()


class AuditSink:
    """A sink (the `edge.sinks.base.Sink` protocol) that writes every verdict to an `AuditStore`."""

    def __init__(
        self,
        store: AuditStore,
        name: str = "audit",
        queue_size: int = 65536,
        batch_size: int = 512,
        purge_interval_s: float = 3600.0,
    ) -> None:
        self.name = name
        self.store = store
        self.batch_size = batch_size
        self.purge_interval_s = purge_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self._live = False

    def start(self) -> None:
        self.store.open()
        self._live = True
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, verdict: Verdict) -> bool:
        try:
            self._queue.put_nowait(verdict)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        with self._lock:
            self.submitted += 1
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("audit: queue still full at close; %s verdicts not written", self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None
        self._live = False

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "best_effort",
            "submitted": self.submitted,
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "backlog": self._queue.qsize(),
            "live": self._live,
            "last_error": self.last_error,
            "path": str(self.store.path),
        }

    def _run(self) -> None:
        next_purge = 0.0
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                first = None
            batch: list[Verdict] = []
            if first is _STOP:
                stop = True
            elif first is not None:
                batch.append(first)
                while len(batch) < self.batch_size:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
            if batch:
                self._write(batch)
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_interval_s
                try:
                    self.store.purge()
                except Exception as exc:  # retention failing must not stop the trail
                    log.warning("audit: retention failed: %s", exc)

    def _write(self, batch: list[Verdict]) -> None:
        payloads = [v.to_dict() for v in batch]
        for attempt in range(3):
            try:
                self.store.add_verdicts(payloads)
                self.written += len(payloads)
                self._live = True
                return
            except Exception as exc:  # a full disk or a locked file: retry, then count the loss
                self.last_error = str(exc)
                self._live = False
                log.warning("audit: writing %s rows failed (attempt %s): %s", len(payloads), attempt + 1, exc)
                time.sleep(0.2 * (attempt + 1))
        self.errors += len(payloads)
        log.error("audit: %s verdicts could not be written", len(payloads))
