"""The Sink protocol and the two kinds of sink every plugin builds on.

- `BestEffortSink` (log, live page): a bounded in-memory queue and one writer thread. When the
  queue is full the verdict is dropped *for that sink* and counted; the first drop of a burst
  is logged at once (then at most every few seconds). A write error is counted, logged, retried
  with back-off (`reopen()` first), and the sink recovers when its target does.
- `DurableSink` (`edge.sinks.durable`: JSONL, MQTT, OPC UA client, audit): a journal on disk,
  so a verdict survives an outage of the far side and a crash of the service; in a service one
  journal for all of them, the outbox (`edge.sinks.outbox`). The durable sinks and the outbox
  share `QueuedWriter`: the hand-off queue, the batching writer thread, close-with-deadline and
  the durable health.

`submit()` never blocks the pipeline. `health()` is a plain dict (`SinkHealth` keys) that the
metrics collector, the snapshot and the status page read while the service runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from edge.verdict import Verdict

if TYPE_CHECKING:
    from edge.control import ServiceContext

log = logging.getLogger(__name__)

# keys every sink's health() has (plugins may add their own numeric or string extras)
HEALTH_KEYS = ("name", "kind", "submitted", "written", "dropped", "errors", "backlog", "live", "last_error")


@runtime_checkable
class Sink(Protocol):
    """Where verdicts go. `submit` is called from the pipeline's emitting threads and must not block."""

    name: str

    def start(self) -> None: ...

    def submit(self, verdict: Verdict) -> bool: ...

    def close(self, timeout: float = 5.0) -> None: ...

    def health(self) -> dict[str, Any]: ...


def bind_sink(sink: Sink, ctx: ServiceContext) -> None:
    """Give a sink that wants it (an optional `bind(ctx)` method) the service context."""
    bind = getattr(sink, "bind", None)
    if callable(bind):
        bind(ctx)


class SinkConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Name in metrics and health; defaults to the type.")
    queue_size: int = Field(
        1024, ge=1, description="In-memory hand-off between the pipeline and the sink's writer thread."
    )


class DropWarner:
    """Logs the first drop of a burst at once, then a summary at most every `every_s` seconds."""

    def __init__(self, sink: str, what: str, every_s: float = 5.0) -> None:
        self.sink = sink
        self.what = what
        self.every_s = every_s
        self._last = 0.0
        self._since = 0
        self._lock = threading.Lock()

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self._since += n
            now = time.monotonic()
            if now - self._last < self.every_s:
                return
            count, self._since, self._last = self._since, 0, now
        log.warning("sink %s: %s %d verdict(s) (%s)", self.sink, self.what, count, "see edge_sink_dropped")


_STOP = object()


def hand_off(q: queue.Queue[Any], item: Any, counters: SinkCounters, full: DropWarner) -> bool:
    """A sink's `submit`: put the item on its writer's queue without waiting; when the queue is
    full the verdict is dropped for this sink, counted and (rate-limited) logged."""
    try:
        q.put_nowait(item)
    except queue.Full:
        counters.count(dropped=1)
        full.drop()
        return False
    counters.count(submitted=1)
    return True


class SinkCounters:
    """The counters every sink reports; `count()` is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_write_wall_ns: int | None = None

    def count(self, **deltas: int) -> None:
        with self._lock:
            for key, n in deltas.items():
                setattr(self, key, getattr(self, key) + n)
            if deltas.get("written"):
                self.last_write_wall_ns = time.time_ns()

    def error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message


def writer_health(name: str, kind: str, counters: SinkCounters, backlog: int, live: bool) -> dict[str, Any]:
    """The health fields every sink with a writer thread reports (best-effort, durable, audit)."""
    c = counters
    return {
        "name": name,
        "kind": kind,
        "submitted": c.submitted,
        "written": c.written,
        "dropped": c.dropped,
        "errors": c.errors,
        "backlog": backlog,
        "live": live,
        "last_error": c.last_error,
    }


class QueuedWriter:
    """What the durable sinks (`edge.sinks.durable.DurableSink`) and the outbox (`edge.sinks.outbox`) share:
    a bounded hand-off queue, one writer thread draining it in batches (subclasses implement
    `_run`), a close that lets the writer finish until a deadline, and the durable health fields."""

    kind = "durable"

    def __init__(self, name: str, queue_size: int, full_what: str) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.counters = SinkCounters()
        self.journaled = 0
        self.replayed = 0
        self.expired = 0
        self._on_disk = 0  # verdicts waiting on disk (a journal) for delivery
        self._live = False
        self._close_deadline = 0.0
        self._full = DropWarner(name, full_what)

    def _queued(self, verdict: Verdict) -> Any:
        """What `submit` puts on the queue for a verdict (serialisation happens in the writer)."""
        return verdict

    def _run(self) -> None:
        raise NotImplementedError

    def _closing(self) -> None:
        """Called by `close` before the stop marker is queued."""

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, verdict: Verdict) -> bool:
        return hand_off(self._queue, self._queued(verdict), self.counters, self._full)

    def close(self, timeout: float = 5.0) -> None:
        """Let the writer take everything queued and deliver until `timeout`; what is left stays on disk."""
        if self._thread is None:
            return
        self._close_deadline = time.monotonic() + timeout
        self._closing()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout + 2.0)
        if self._thread.is_alive():
            log.warning("sink %s: writer still busy after %.1f s at close", self.name, timeout)
        self._thread = None

    def backlog(self) -> int:
        return self._queue.qsize() + self._on_disk

    def _take(self, block_s: float, limit: int) -> tuple[list[Any], bool]:
        """Up to `limit` queued items (waiting up to `block_s` for the first), and whether the
        stop marker was among them."""
        items: list[Any] = []
        stop = False
        try:
            item = self._queue.get(timeout=block_s) if block_s > 0 else self._queue.get_nowait()
            while True:
                if item is _STOP:
                    stop = True
                else:
                    items.append(item)
                if len(items) >= limit:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return items, stop

    def durable_health(self) -> dict[str, Any]:
        """`writer_health` plus what a durable sink adds: spilled, replayed, expired, last ack."""
        live = self._live and self._thread is not None and self._thread.is_alive()
        out = writer_health(self.name, self.kind, self.counters, self.backlog(), live)
        out.update({
            "journaled": self.journaled,
            "replayed": self.replayed,
            "expired": self.expired,
            "last_ack_wall_ns": self.counters.last_write_wall_ns,
        })
        return out


class BestEffortSink:
    """Bounded queue + one writer thread; drop and count when full. Subclasses implement `write`.

    A `write` (or `flush`) that raises is counted, logged (rate-limited), `reopen()` is called
    and the same verdict is retried with exponential back-off up to `max_retries` times; after
    that it is dropped and counted, and the sink goes on with the next one.
    """

    kind = "best_effort"

    def __init__(self, name: str, queue_size: int, max_retries: int = 3, retry_initial_s: float = 0.05) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.counters = SinkCounters()
        self.max_retries = max_retries
        self.retry_initial_s = retry_initial_s
        self._full = DropWarner(name, "queue full, dropped")
        self._errlog = DropWarner(name, "write failed for", every_s=10.0)
        self._live = True
        self._closing = threading.Event()

    # -- subclass hooks -------------------------------------------------------
    def open(self) -> None:
        """Called in `start()` before the writer thread runs (errors here stop the service)."""

    def write(self, verdict: Verdict) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Called when the queue runs empty and at close."""

    def reopen(self) -> None:
        """Called after a failed write, before the retry (reopen a file, reconnect)."""

    def shutdown(self) -> None:
        """Called last, from the writer thread."""

    # -- Sink protocol --------------------------------------------------------
    def start(self) -> None:
        self.open()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, verdict: Verdict) -> bool:
        return hand_off(self._queue, verdict, self.counters, self._full)

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._closing.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            left = self._queue.qsize()
            self.counters.count(dropped=left)
            log.warning("sink %s: still %d verdicts queued at close; dropped", self.name, left)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("sink %s: writer did not finish within %.1f s", self.name, timeout)
        self._thread = None

    def backlog(self) -> int:
        return self._queue.qsize()

    def health(self) -> dict[str, Any]:
        live = self._live and self._thread is not None and self._thread.is_alive()
        return writer_health(self.name, self.kind, self.counters, self.backlog(), live)

    # -- writer thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                self._write_one(item)
                if self._queue.empty():
                    self._guarded(self.flush, "flush")
        finally:
            self._guarded(self.flush, "flush")
            self._guarded(self.shutdown, "shutdown")

    def _guarded(self, fn: Any, what: str) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # a failing sink must never kill its thread
            self.counters.error(f"{what}: {exc}")
            self._errlog.drop()
            log.debug("sink %s: %s failed", self.name, what, exc_info=True)
            return False

    def _write_one(self, verdict: Verdict) -> None:
        delay = self.retry_initial_s
        for attempt in range(self.max_retries + 1):
            try:
                self.write(verdict)
                self.counters.count(written=1)
                self._live = True
                return
            except Exception as exc:
                self._live = False
                self.counters.error(f"write: {type(exc).__name__}: {exc}")
                if attempt == 0:
                    log.warning("sink %s: cannot write verdict %s: %s", self.name, verdict.result_id, exc)
                if attempt == self.max_retries or self._closing.is_set():
                    break
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._guarded(self.reopen, "reopen")
        self.counters.count(dropped=1)
        self._errlog.drop()
