"""The Sink protocol and `QueuedSink`, the bounded-queue worker every sink builds on.

`submit()` never blocks the pipeline: the verdict goes into the sink's own bounded queue, and
when that is full the verdict is dropped for that sink and counted (`dropped`). A thread per
sink drains the queue into `write()`.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from edge.verdict import Verdict

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    name: str

    def start(self) -> None: ...

    def submit(self, verdict: Verdict) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...

    def health(self) -> dict[str, Any]: ...


class SinkConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Name in metrics and health; defaults to the type.")
    queue_size: int = Field(1024, ge=1, description="Bounded backlog; overflow is dropped and counted.")


_STOP = object()


class QueuedSink:
    """Base for sinks: bounded queue + one writer thread. Subclasses implement `write`."""

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._lock = threading.Lock()

    # -- subclass hooks -------------------------------------------------------
    def open(self) -> None:
        """Called in `start()` before the writer thread runs."""

    def write(self, verdict: Verdict) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Called when the queue runs empty and at close."""

    def shutdown(self) -> None:
        """Called last, from the writer thread."""

    # -- Sink protocol --------------------------------------------------------
    def start(self) -> None:
        self.open()
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
            log.warning("sink %s: queue still full at close; %s verdicts not written", self.name, self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    def backlog(self) -> int:
        return self._queue.qsize()

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "submitted": self.submitted,
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "backlog": self.backlog(),
        }

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                self._write_one(item)
                if self._queue.empty():
                    self.flush()
        finally:
            self.flush()
            self.shutdown()

    def _write_one(self, verdict: Verdict) -> None:
        try:
            self.write(verdict)
            self.written += 1
        except Exception:  # a failing sink must not take the pipeline down
            self.errors += 1
            log.exception("sink %s failed to write verdict %s", self.name, verdict.result_id)
