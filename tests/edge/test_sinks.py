from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from edge.sinks.base import QueuedSink
from edge.sinks.jsonl import JsonlSinkConfig
from edge.sinks.log import LogSinkConfig
from edge.verdict import SCHEMA_VERSION, Detection, Reason, Verdict, VerdictKind, new_result_id


def verdict(i: int, kind: VerdictKind = VerdictKind.REJECT) -> Verdict:
    d = Detection(1, "short", 0.91, (1.0, 2.0, 30.0, 40.0))
    return Verdict(
        result_id=new_result_id(),
        part_id=f"p{i}",
        frame_id=i,
        camera="cam",
        verdict=kind,
        reasons=(Reason("max_count", "short", d),) if kind is VerdictKind.REJECT else (),
        detections=(d,),
        captured_ns=1,
        arrived_ns=2,
        decided_ns=3_000_001,
        deadline_ns=4,
        decided_wall_ns=5,
    )


def test_jsonl_sink_writes_schema(tmp_path: Path) -> None:
    sink = JsonlSinkConfig(path="v/out.jsonl").build(tmp_path)
    sink.start()
    for i in range(5):
        assert sink.submit(verdict(i))
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "v" / "out.jsonl").read_text().splitlines()]
    assert [r["frame_id"] for r in rows] == list(range(5))
    r = rows[0]
    assert r["schema"] == SCHEMA_VERSION and r["verdict"] == "REJECT"
    assert r["reasons"][0]["detection"]["class"] == "short"
    assert set(r["timestamps_ns"]) == {"captured", "arrived", "decided", "deadline", "decided_wall"}
    assert sink.health()["written"] == 5


def test_result_ids_sort_by_time() -> None:
    ids = [new_result_id() for _ in range(100)]
    assert ids == sorted(ids) and len(set(ids)) == 100


class SlowSink(QueuedSink):
    def __init__(self) -> None:
        super().__init__("slow", queue_size=4)
        self.gate = threading.Event()

    def write(self, v: Verdict) -> None:
        self.gate.wait(5)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    sink = SlowSink()
    sink.start()
    t = time.monotonic()
    results = [sink.submit(verdict(i)) for i in range(20)]
    assert time.monotonic() - t < 0.5
    assert results.count(False) >= 15 and sink.dropped == results.count(False)
    sink.gate.set()
    sink.close()
    assert sink.written == results.count(True)


def test_failing_write_is_counted_not_raised() -> None:
    class Broken(QueuedSink):
        def write(self, v: Verdict) -> None:
            raise RuntimeError("disk full")

    s = Broken("broken", 8)
    s.start()
    s.submit(verdict(1))
    s.close()
    assert s.errors == 1


def test_log_sink(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSinkConfig().build(Path("."))
    sink.start()
    with caplog.at_level(logging.INFO, logger="edge.verdicts"):
        sink.submit(verdict(1))
        sink.submit(verdict(2, VerdictKind.PASS))
        sink.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "edge.verdicts"]
    assert len(msgs) == 1 and msgs[0].startswith("REJECT cam part=p1")
