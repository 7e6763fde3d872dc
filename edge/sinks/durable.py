"""Durable sinks: every verdict is journaled on disk before delivery, deleted only once delivered.

    submit() --bounded queue--> writer thread: journal.append(batch)   (SQLite WAL, one commit)
                                               deliver(oldest entries)  (subclass: file, broker, PLC)
                                               journal.delete(delivered)

`deliver(entries)` blocks until the far side has taken the entries (or some leading part of
them: it returns how many) and raises `TransientSinkError` when it cannot now (broker down,
disk full: retried with back-off, the backlog grows on disk, `live` is False) or
`PermanentSinkError` when it never will (the writer then delivers one entry at a time until
the refused one is found; only that one is dropped, counted and logged). A `deliver` or `open`
that waits on the far side (a PUBACK, a PLC's ack, a connect) calls `journal_waiting()` between
slices of its wait, so what is submitted meanwhile is on disk within a slice, however long the
far side takes: a crash in the middle of a slow delivery loses nothing handed over before it.
In a service the durable sinks share one journal, the outbox (`edge.sinks.outbox`): its committer
appends each batch for every member in one transaction and hands the entries to each member's
writer (`offer`), which then only delivers and deletes; a sink used on its own (or given its own
`journal.path`) journals into a file of its own, as drawn above.
Entries from an earlier run of the service are delivered first, flagged `replayed`; entries past
the journal's age or size bound are dropped as `expired`, counted and logged. At close the
writer journals everything still queued and keeps delivering until the timeout; what is left
stays on disk for the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import PermanentSinkError, SinkError, TransientSinkError
from edge.sinks.base import DropWarner, QueuedWriter, SinkConfigBase
from edge.sinks.journal import Journal, JournalEntry
from edge.verdict import Verdict

if TYPE_CHECKING:
    from edge.control import ServiceContext
    from edge.sinks.outbox import Outbox, OutboxView

log = logging.getLogger(__name__)


class JournalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(
        None,
        description=(
            "Default: the service's outbox (<state_dir>/journal/outbox.sqlite), one journal for all its durable "
            "sinks, committed for all of them at once. A file given here is this sink's own (SQLite), outside "
            "that guarantee: after a crash it may hold a verdict the other sinks never got, or miss one."
        ),
    )
    max_entries: int = Field(1_000_000, ge=1, description="Most verdicts kept waiting; the oldest beyond are expired.")
    max_age_s: float = Field(7 * 86400, gt=0, description="Verdicts waiting longer than this are expired.")
    batch_size: int = Field(256, ge=1, le=100_000, description="Most entries handed to one delivery.")
    retry_initial_s: float = Field(0.2, gt=0, description="First back-off after a failed delivery.")
    retry_max_s: float = Field(10.0, gt=0, description="Longest back-off.")


class DurableSinkConfigBase(SinkConfigBase):
    journal: JournalConfig = Field(default_factory=JournalConfig, description="The on-disk backlog.")

    def journal_path(self, base_dir: Path) -> Path | None:
        if self.journal.path is None:
            return None
        p = Path(self.journal.path).expanduser()
        return p if p.is_absolute() else base_dir / p


class DurableSink(QueuedWriter):
    """Base for sinks that must not lose a verdict. Subclasses implement `deliver`."""

    def __init__(self, name: str, journal: JournalConfig, journal_path: Path | None, queue_size: int = 4096) -> None:
        super().__init__(name, queue_size, "hand-off queue full (journal writer behind), dropped")
        self.cfg = journal
        self.journal_path = journal_path
        self._journal: Journal | OutboxView | None = None
        self._outbox: Outbox | None = None  # a member of the service's outbox: it journals for this sink
        self._offered = 0  # entries the outbox handed over (its thread), and those taken (the writer's)
        self._taken = 0
        self._resync = False  # an offer found the queue full: the entries are on disk, count them again
        self._last_seq = 0  # the newest entry taken into the backlog (an offer taken twice is skipped)
        self.late = 0
        self._oldest_wall_ns: int | None = None
        self._fresh: list[JournalEntry] = []  # the newest entries, when they are all that waits (no read back)
        self._stop = threading.Event()
        self._stop_taken = False  # the stop marker was taken by journal_waiting() during a delivery
        self._errlog = DropWarner(name, "delivery failed for", every_s=10.0)

    # -- subclass hooks -------------------------------------------------------------
    def open(self) -> None:
        """Called in the writer thread before the first delivery (connect, open a file)."""

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        """Hand entries (oldest first) to the far side; None or len(entries) when all were taken,
        k when only the first k were. Raise TransientSinkError / PermanentSinkError."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Called last, from the writer thread."""

    def extra_health(self) -> dict[str, Any]:
        return {}

    def journal_waiting(self) -> None:
        """Journal what was submitted while the writer waits on the far side. For `deliver` and
        `open` to call between slices (~50 ms) of a wait; a no-op outside the writer thread."""
        journal = self._journal
        if journal is None or threading.current_thread() is not self._thread:
            return
        if self._drain_into(journal, block_s=0.0):
            self._stop_taken = True

    # -- outbox membership --------------------------------------------------------------
    def join(self, outbox: Outbox) -> None:
        """Journal through the service's outbox (called by `Outbox`): `submit` is then a no-op,
        the outbox commits each verdict for every member and `offer`s the entries."""
        self._outbox = outbox

    def offer(self, entries: list[JournalEntry]) -> None:
        """Entries the outbox has committed for this sink (its committer thread); never blocks."""
        self.counters.count(submitted=len(entries))
        try:
            self._queue.put_nowait(entries)
            self._offered += len(entries)
        except queue.Full:  # they are on disk: the writer counts them again and reads them back
            self._resync = True

    # -- Sink protocol --------------------------------------------------------------
    def bind(self, ctx: ServiceContext) -> None:
        if self.journal_path is None:
            self.journal_path = ctx.state_dir / "journal" / f"{self.name}.sqlite"

    def submit(self, verdict: Verdict) -> bool:
        if self._outbox is not None:
            return True  # the outbox journals it for this sink (and counts it here when it has)
        return super().submit(verdict)

    def start(self) -> None:
        journal: Journal | OutboxView
        if self._outbox is not None:
            journal = self._outbox.view(self)
            journal.open()
            self._last_seq = journal.last_seq()  # offers of what is counted here are skipped when taken
            where = str(journal.path)
        elif self.journal_path is None:
            raise SinkError(f"sink {self.name}: no journal path (give journal.path or run it in a service)")
        else:
            journal = Journal(self.journal_path, self.cfg.max_entries, self.cfg.max_age_s)
            where = str(self.journal_path)
            journal.open()
        self._journal = journal
        self._on_disk = journal.count()
        self._oldest_wall_ns = journal.oldest_wall_ns()
        if self._on_disk:
            log.warning("sink %s: %d verdict(s) from an earlier run waiting in %s; replaying",
                        self.name, self._on_disk, where)
        self._start_writer()

    def backlog(self) -> int:
        if self._outbox is not None:
            return max(0, self._offered - self._taken) + self._on_disk
        return super().backlog()

    def _queued(self, verdict: Verdict) -> Any:
        # serialised in the writer thread (`Verdict.to_json`: once for every durable sink)
        return (verdict, time.time_ns())

    def _closing(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        oldest = self._oldest_wall_ns
        out = self.durable_health()
        out["late"] = self.late
        out["oldest_waiting_s"] = round((time.time_ns() - oldest) / 1e9, 3) if oldest and self._on_disk else 0.0
        out.update(self.extra_health())
        return out

    # -- writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        journal = self._journal
        assert journal is not None
        opened = False
        backoff = 0.0
        retry_at = 0.0
        stopping = False
        isolate = False  # after a permanent refusal of a batch: one entry at a time to find it
        expire_at = 0.0
        try:
            while True:
                block_s = 0.0 if self._stop_taken else self._idle_wait(retry_at)
                stopping = self._drain_into(journal, block_s=block_s) or stopping or self._stop_taken
                now = time.monotonic()
                if now >= expire_at:  # the bounds move slowly: checking once a second is enough
                    self._expire(journal)
                    expire_at = now + 1.0
                if stopping and (now >= self._close_deadline or self._on_disk == 0):
                    break
                if not opened and now >= retry_at:
                    try:
                        self.open()
                        opened = True
                        self._live = True
                    except Exception as exc:
                        backoff = self._failed(exc, backoff)
                        retry_at = time.monotonic() + backoff
                        continue
                if not opened or self._on_disk == 0 or now < retry_at:
                    if stopping:
                        time.sleep(min(0.05, max(0.0, retry_at - now)))
                    continue
                limit = 1 if isolate else self.cfg.batch_size
                from_fresh = bool(self._fresh) and not isolate
                if from_fresh:  # just journaled, nothing older waiting: no read back
                    entries, self._fresh = self._fresh[:limit], self._fresh[limit:]
                else:
                    self._fresh = []
                    entries = journal.pending(limit)
                    if not entries:  # the count ran ahead of the journal (an offer counted twice)
                        self._on_disk = 0
                        continue
                    newer = sum(1 for e in entries if e.seq > self._last_seq)
                    if newer:  # committed by the outbox and read back before its offer: that offer is skipped
                        self._on_disk += newer
                        self._last_seq = entries[-1].seq
                try:
                    taken = self.deliver(entries)
                except PermanentSinkError as exc:
                    if len(entries) > 1:  # find the entry refused: deliver one at a time for a while
                        isolate = True
                        self._fresh = []
                        continue
                    self._drop(journal, entries, exc)
                    continue
                except Exception as exc:  # TransientSinkError and anything unexpected: keep, retry later
                    self._fresh = []  # read back from the journal next time (attempt counts)
                    journal.attempted([e.seq for e in entries])
                    backoff = self._failed(exc, backoff)
                    retry_at = time.monotonic() + backoff
                    continue
                n = len(entries) if taken is None else max(0, min(int(taken), len(entries)))
                if n < len(entries):  # the rest stays first in line
                    self._fresh = entries[n:] + self._fresh if from_fresh else []
                self._delivered(journal, entries[:n])
                backoff = 0.0
                isolate = isolate and n == 0
        except Exception:
            log.exception("sink %s: journal writer stopped", self.name)
            self.counters.error("journal writer stopped")
        finally:
            self._live = False
            left = self._queue.qsize()
            if left:
                log.warning("sink %s: %d verdict(s) not journaled at close", self.name, left)
            if self._on_disk:
                log.warning("sink %s: %d verdict(s) kept in %s for the next start", self.name, self._on_disk,
                            self.journal_path)
            try:
                self.shutdown()
            except Exception:
                log.exception("sink %s: shutdown failed", self.name)
            journal.close()

    def _idle_wait(self, retry_at: float) -> float:
        if self._on_disk and time.monotonic() >= retry_at:
            return 0.0
        if self._on_disk:
            return max(0.0, min(0.5, retry_at - time.monotonic()))
        return 0.5

    def _drain_into(self, journal: Journal | OutboxView, block_s: float) -> bool:
        """Move queued verdicts into the journal (one transaction), or take the entries the outbox
        committed for this sink. True when the stop marker was seen."""
        items, stop = self._take(block_s, 4096)
        if self._outbox is not None:
            for entries in items:
                self._taken += len(entries)
                self._took([e for e in entries if e.seq > self._last_seq])
            if self._resync:  # an offer was lost to a full queue: what waits is what the outbox says
                self._resync = False
                more, stop_too = self._take(0.0, 1 << 30)
                stop = stop or stop_too
                self._taken += sum(len(b) for b in more)
                self._fresh = []  # read back in order from the outbox
                self._on_disk = journal.count()
                self._last_seq = max(self._last_seq, journal.last_seq())
        elif items:
            assert isinstance(journal, Journal)  # a sink's own journal: the outbox's view takes no appends
            self._append(journal, [(v.result_id, v.to_json(), t) for v, t in items])
        return stop

    def _took(self, entries: list[JournalEntry]) -> None:
        """Entries just journaled join the backlog (kept in memory too while nothing older waits)."""
        if not entries:
            return
        self._last_seq = entries[-1].seq
        if self._on_disk == len(self._fresh):  # everything waiting is in memory too: keep the order
            self._fresh.extend(entries)
        else:
            self._fresh = []
        self.journaled += len(entries)
        self._on_disk += len(entries)
        if self._oldest_wall_ns is None:
            self._oldest_wall_ns = entries[0].enqueued_wall_ns

    def _append(self, journal: Journal, rows: list[tuple[str, str, int]]) -> None:
        delay = 0.05
        while True:
            try:
                entries = journal.append(rows)
                break
            except Exception as exc:  # disk full, I/O error: the verdicts are still in memory
                self.counters.error(f"journal: {exc}")
                self._errlog.drop(len(rows))
                if self._stop.is_set() and time.monotonic() >= self._close_deadline:
                    self.counters.count(dropped=len(rows))
                    log.error("sink %s: %d verdict(s) lost: journal %s unwritable (%s)",
                              self.name, len(rows), self.journal_path, exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._took(entries)

    def _expire(self, journal: Journal | OutboxView) -> None:
        gone = journal.expire(count=self._on_disk)
        if gone:
            self._fresh = []
            self.expired += len(gone)
            self._on_disk = max(0, self._on_disk - len(gone))
            log.warning("sink %s: %d verdict(s) expired undelivered (journal bound), first %s",
                        self.name, len(gone), gone[0])
            self._oldest_wall_ns = journal.oldest_wall_ns()

    def _delivered(self, journal: Journal | OutboxView, entries: list[JournalEntry]) -> None:
        if not entries:
            return
        journal.delete([e.seq for e in entries])
        self._on_disk = max(0, self._on_disk - len(entries))
        self.replayed += sum(1 for e in entries if e.replayed)
        now = time.time_ns()
        self.late += sum(1 for e in entries if e.is_late(now))
        self.counters.count(written=len(entries))
        if not self._live:
            log.info("sink %s: delivering again", self.name)
        self._live = True
        if not self._on_disk:
            self._oldest_wall_ns = None
        elif self._fresh:
            self._oldest_wall_ns = self._fresh[0].enqueued_wall_ns
        else:
            self._oldest_wall_ns = journal.oldest_wall_ns()

    def _drop(self, journal: Journal | OutboxView, entries: list[JournalEntry], exc: Exception) -> None:
        journal.delete([e.seq for e in entries])
        self._on_disk = max(0, self._on_disk - len(entries))
        self.counters.count(dropped=len(entries))
        self.counters.error(f"permanent: {exc}")
        log.error("sink %s: %d verdict(s) refused for good, dropped (first %s): %s",
                  self.name, len(entries), entries[0].result_id if entries else "-", exc)

    def _failed(self, exc: Exception, backoff: float) -> float:
        was_live = self._live
        self._live = False
        self.counters.error(f"{type(exc).__name__}: {exc}")
        if was_live or backoff == 0.0:
            level = logging.WARNING if isinstance(exc, (TransientSinkError, SinkError)) else logging.ERROR
            log.log(level, "sink %s: cannot deliver (%s); %d verdict(s) waiting on disk",
                    self.name, exc, self._on_disk)
        return self.cfg.retry_initial_s if backoff == 0.0 else min(backoff * 2, self.cfg.retry_max_s)
