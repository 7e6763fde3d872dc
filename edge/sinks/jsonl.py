"""JSON-lines file sink: one verdict record (`Verdict.to_dict`) per line, appended.

A durable sink (`edge.sinks.durable`): verdicts are journaled first and written to the file
by the journal's writer thread, so a full disk, a read-only remount or a deleted folder only
delays them (retried with back-off, counted, `live` False) and the file catches up when space
returns; a crash loses nothing that was journaled.

The file itself (`JsonlWriter`) is written line-atomically: a batch of whole lines per
`write()` on an O_APPEND descriptor, and a write cut short (disk full) is truncated back to its
last whole line. On open a file whose last byte is not a newline (a run killed mid-line by an
older writer, or a truncate that failed) gets one, so the next record starts on its own line;
`read_records` skips such a torn line. A file rotated away (renamed or deleted; its inode
changed) is noticed within `rotate_check_s` and a new one is opened at the path. Verdicts from
an earlier run that the journal replays are not written twice when the file already has them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.errors import SinkError, TransientSinkError
from edge.sinks.durable import DurableSink, DurableSinkConfigBase, JournalConfig
from edge.sinks.journal import JournalEntry

log = logging.getLogger(__name__)

TAIL_BYTES = 256 * 1024  # how much of the file's end is read for result ids already written


class JsonlSinkConfig(DurableSinkConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(..., description="File to append to (relative to the config file).")
    fsync: bool = Field(False, description="fsync after each batch written (survives power loss, slower).")
    rotate_check_s: float = Field(
        1.0, gt=0, description="How often to check the file was rotated away (renamed or deleted) and reopen it."
    )

    def target(self, base_dir: Path) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else base_dir / p

    def preflight(self, base_dir: Path) -> list[str]:
        """What would stop this sink at start (`config check` and `run` both ask)."""
        out = []
        problem = writable_problem(self.target(base_dir))
        if problem is not None:
            out.append(f"jsonl sink {self.name or 'jsonl'}: {problem}")
        journal = self.journal_path(base_dir)
        if journal is not None and (problem := writable_problem(journal)) is not None:
            out.append(f"jsonl sink {self.name or 'jsonl'}: journal: {problem}")
        return out

    def build(self, base_dir: Path) -> JsonlSink:
        p = Path(self.path).expanduser()
        return JsonlSink(
            self.name or "jsonl",
            p if p.is_absolute() else base_dir / p,
            journal=self.journal,
            journal_path=self.journal_path(base_dir),
            queue_size=self.queue_size,
            fsync=self.fsync,
            rotate_check_s=self.rotate_check_s,
        )


class JsonlWriter:
    """Appends whole lines to one file; reopens it when rotated. No threads, no retry policy:
    `write_lines` raises `OSError` and the caller decides (the sink retries with back-off)."""

    def __init__(self, path: Path, fsync: bool = False, rotate_check_s: float = 1.0) -> None:
        self.path = path
        self.fsync = fsync
        self.rotate_check_s = rotate_check_s
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._next_check = 0.0
        self.opens = 0
        self.rotations = 0
        self.torn_repaired = 0
        self.truncated_partial = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open for append (creating folders); end a torn last line. Raises OSError."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size > 0 and self._last_byte(st.st_size) != b"\n":
                os.write(fd, b"\n")  # the torn line stays, alone on its line; readers skip it
                self.torn_repaired += 1
                log.warning("jsonl %s: the last line was cut short (a killed writer?); ended it", self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._ino = (st.st_dev, st.st_ino)
        self._next_check = time.monotonic() + self.rotate_check_s
        self.opens += 1

    def _last_byte(self, size: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            return fh.read(1)

    def tail_result_ids(self) -> set[str]:
        """The result ids in the file's last `TAIL_BYTES` (to skip re-writing replayed verdicts)."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size <= 0:
                    return set()
                fh.seek(max(0, size - TAIL_BYTES))
                data = fh.read()
        except OSError:
            return set()
        ids: set[str] = set()
        for line in data.split(b"\n"):
            rid = _result_id(line)
            if rid is not None:
                ids.add(rid)
        return ids

    def rotated(self) -> bool:
        """True when the path no longer names the open file (renamed, deleted, replaced)."""
        if self._ino is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._ino

    def write_lines(self, lines: list[bytes]) -> None:
        """Append whole lines (each ending in b"\\n") in one write; all or none (raises OSError)."""
        if self._fd is None:
            self.open()
        elif time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.rotate_check_s
            if self.rotated():
                self.rotations += 1
                log.info("jsonl %s: the file was rotated away; opening a new one", self.path)
                self.open()
        fd = self._fd
        assert fd is not None
        data = b"".join(lines)
        done = 0
        try:
            while done < len(data):
                n = os.write(fd, data[done:] if done else data)
                if n <= 0:  # pragma: no cover - a regular file returns > 0 or raises
                    raise OSError(errno.EIO, "write returned 0")
                done += n
        except OSError:
            if done:
                self._cut_back(fd, done)
            self.close()  # the next attempt reopens (and ends any torn line left)
            raise
        if self.fsync:
            try:
                os.fsync(fd)
            except OSError:
                self.close()
                raise

    def _cut_back(self, fd: int, written: int) -> None:
        """Remove the `written` bytes of a batch that failed part-way (only whole lines count)."""
        try:
            size = os.fstat(fd).st_size
            os.ftruncate(fd, max(0, size - written))
            self.truncated_partial += 1
        except OSError:
            pass  # the reopen ends the torn line instead

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def writable_problem(path: Path) -> str | None:
    """Why a file can never be appended to at `path` (None: it can, as far as can be told):
    a folder, a missing folder that cannot be created, no permission, a read-only file system."""
    if path.is_dir():
        return f"{path} is a folder"
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != path and not probe.is_dir():
        return f"cannot write {path}: {probe} is not a folder"
    if not os.access(probe, os.W_OK):
        return f"cannot write {path}: no write permission on {probe}"
    try:
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"cannot write {path}: {probe} is on a read-only file system"
    except OSError:
        pass
    return None


def _result_id(line: bytes) -> str | None:
    key = b'"result_id":"'
    i = line.find(key)
    if i < 0:
        return None
    j = line.find(b'"', i + len(key))
    return line[i + len(key) : j].decode("ascii", "replace") if j > 0 else None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The verdict records of a JSONL file, skipping torn or otherwise unparsable lines."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                continue  # cut short: a writer died mid-line (or is writing it now)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


class JsonlSink(DurableSink):
    """Verdicts journaled, then appended to a JSONL file (see the module docstring)."""

    def __init__(
        self,
        name: str,
        path: Path,
        journal: JournalConfig | None = None,
        journal_path: Path | None = None,
        queue_size: int = 4096,
        fsync: bool = False,
        rotate_check_s: float = 1.0,
    ) -> None:
        super().__init__(name, journal or JournalConfig(), journal_path, queue_size)
        self.path = path
        self.writer = JsonlWriter(path, fsync, rotate_check_s)
        self._already: set[str] = set()

    def start(self) -> None:
        if self.journal_path is None:  # outside a service: keep the journal beside the file
            self.journal_path = self.path.with_name(f".{self.path.name}.journal.sqlite")
        self._check_writable()
        super().start()

    def _check_writable(self) -> None:
        """Refuse at start a path that can never be written (a folder, under a file, read-only)."""
        problem = writable_problem(self.path)
        if problem is not None:
            raise SinkError(f"jsonl sink {self.name}: {problem}")

    def open(self) -> None:
        try:
            self.writer.open()
        except OSError as exc:
            raise TransientSinkError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        self._already = self.writer.tail_result_ids()

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        lines = []
        for e in entries:
            if e.replayed and e.result_id in self._already:
                continue  # written by the earlier run before it could tell the journal
            lines.append(json.dumps(e.payload, separators=(",", ":")).encode() + b"\n")
        if not lines:
            return None
        try:
            self.writer.write_lines(lines)
        except OSError as exc:
            raise TransientSinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return None

    def shutdown(self) -> None:
        self.writer.close()

    def extra_health(self) -> dict[str, Any]:
        w = self.writer
        return {"path": str(self.path), "rotations": w.rotations, "torn_repaired": w.torn_repaired}
