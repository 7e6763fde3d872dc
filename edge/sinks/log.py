"""Log sink: REJECT and FAILSAFE verdicts (optionally PASS too) to the `edge.verdicts` logger.

A best-effort sink (`edge.sinks.base.BestEffortSink`): when the log cannot keep up, verdicts
are dropped for this sink only, counted and warned about; the pipeline never waits for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.sinks.base import BestEffortSink, SinkConfigBase
from edge.verdict import Verdict, VerdictKind


class LogSinkConfig(SinkConfigBase):
    type: Literal["log"] = "log"
    include_pass: bool = Field(False, description="Log PASS verdicts too (noisy).")
    level: Literal["DEBUG", "INFO", "WARNING"] = "INFO"

    def build(self, base_dir: Path) -> LogSink:
        return LogSink(self.name or "log", self.queue_size, self.include_pass, logging.getLevelName(self.level))


class LogSink(BestEffortSink):
    def __init__(self, name: str, queue_size: int, include_pass: bool, level: int) -> None:
        super().__init__(name, queue_size)
        self.include_pass = include_pass
        self.level = level
        self.logger = logging.getLogger("edge.verdicts")

    def write(self, verdict: Verdict) -> None:
        if verdict.verdict is VerdictKind.PASS and not self.include_pass:
            return
        if verdict.failsafe_reason is not None:
            why = verdict.failsafe_reason.value
        else:
            why = "; ".join(r.message for r in verdict.reasons)
        self.logger.log(
            self.level,
            "%s %s part=%s frame=%s %.1f ms %s",
            verdict.verdict.value,
            verdict.camera,
            verdict.part_id,
            verdict.frame_id,
            verdict.latency_ms,
            why,
        )
