"""JSON-lines file sink: one verdict record (`Verdict.to_dict`) per line, appended."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from edge.errors import SinkError
from edge.sinks.base import QueuedSink, SinkConfigBase
from edge.verdict import Verdict


class JsonlSinkConfig(SinkConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(..., description="File to append to (relative to the config file).")
    fsync: bool = Field(False, description="fsync after each batch written (durable, slower).")

    def build(self, base_dir: Path) -> JsonlSink:
        p = Path(self.path)
        return JsonlSink(self.name or "jsonl", base_dir / p if not p.is_absolute() else p, self.queue_size, self.fsync)


class JsonlSink(QueuedSink):
    def __init__(self, name: str, path: Path, queue_size: int, fsync: bool = False) -> None:
        super().__init__(name, queue_size)
        self.path = path
        self.fsync = fsync
        self._fh: IO[str] | None = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"jsonl sink {self.name}: cannot open {self.path} ({exc.strerror or exc})") from exc

    def write(self, verdict: Verdict) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(verdict.to_dict(), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def shutdown(self) -> None:
        if self._fh is not None:
            self._fh.close()
