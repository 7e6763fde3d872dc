from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.errors import SinkError
from edge.sinks.base import BestEffortSink
from edge.sinks.jsonl import JsonlSink, JsonlSinkConfig, JsonlWriter, read_records
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
    assert sink.health()["kind"] == "durable"
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


class SlowSink(BestEffortSink):
    def __init__(self) -> None:
        super().__init__("slow", queue_size=4)
        self.gate = threading.Event()

    def write(self, v: Verdict) -> None:
        self.gate.wait(5)


def test_full_queue_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    sink = SlowSink()
    sink.start()
    t = time.monotonic()
    with caplog.at_level(logging.WARNING):
        results = [sink.submit(verdict(i)) for i in range(20)]
    assert any("dropped" in r.getMessage() for r in caplog.records)  # said the moment drops start
    assert time.monotonic() - t < 0.5
    assert results.count(False) >= 15 and sink.health()["dropped"] == results.count(False)
    sink.gate.set()
    sink.close()
    assert sink.health()["written"] == results.count(True)


def test_failing_write_is_counted_not_raised() -> None:
    class Broken(BestEffortSink):
        def write(self, v: Verdict) -> None:
            raise RuntimeError("disk full")

    s = Broken("broken", 8, max_retries=2, retry_initial_s=0.01)
    s.start()
    s.submit(verdict(1))
    s.close()
    h = s.health()
    assert h["errors"] >= 1 and h["dropped"] == 1 and h["written"] == 0


def test_log_sink(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSinkConfig().build(Path("."))
    sink.start()
    with caplog.at_level(logging.INFO, logger="edge.verdicts"):
        sink.submit(verdict(1))
        sink.submit(verdict(2, VerdictKind.PASS))
        sink.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "edge.verdicts"]
    assert len(msgs) == 1 and msgs[0].startswith("REJECT cam part=p1")


# -- JSONL: a durable file ---------------------------------------------------------------------
def _jsonl(tmp_path: Path, path: Path | str, **kw: object) -> JsonlSink:
    cfg = JsonlSinkConfig(path=str(path), journal={"retry_initial_s": 0.02, "retry_max_s": 0.1}, **kw)
    return cfg.build(tmp_path)


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_jsonl_on_a_full_disk_survives_counts_and_recovers_when_space_returns(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    sink = _jsonl(tmp_path, path)
    sink.start()
    try:
        for i in range(10):
            assert sink.submit(verdict(i))
        assert _wait(lambda: sink.health()["errors"] >= 2)
        h = sink.health()
        assert h["written"] == 0 and h["backlog"] == 10 and not h["live"]
        assert "No space left" in (h["last_error"] or "")
        assert sink._thread is not None and sink._thread.is_alive()  # the writer lives on
        path.unlink()  # space returns: the path is a regular file again
        assert _wait(lambda: sink.health()["written"] == 10)
        assert sink.health()["live"] and sink.health()["backlog"] == 0
    finally:
        sink.close()
    assert [r["frame_id"] for r in read_records(path)] == list(range(10))


def test_jsonl_ends_a_torn_last_line_so_the_next_record_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_bytes(b'{"result_id":"a","frame_id":0}\n{"result_id":"b","fram')  # killed mid-line
    sink = _jsonl(tmp_path, path)
    sink.start()
    sink.submit(verdict(7))
    sink.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b'{"result_id":"b","fram'  # left alone, on its own line
    assert json.loads(lines[2])["frame_id"] == 7
    assert [r.get("frame_id") for r in read_records(path)] == [0, 7]  # the reader skips the torn line
    assert sink.health()["torn_repaired"] == 1


def test_jsonl_writer_cuts_a_partial_batch_back_to_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = JsonlWriter(tmp_path / "v.jsonl")
    w.write_lines([b'{"a":1}\n'])
    real = os.write

    def short_then_full(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real(fd, data[:10])  # the disk filled up part-way
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        w.write_lines([b'{"b":2222222}\n', b'{"c":3}\n'])
    monkeypatch.setattr(os, "write", real)
    assert (tmp_path / "v.jsonl").read_bytes() == b'{"a":1}\n'
    w.write_lines([b'{"b":2}\n'])
    w.close()
    assert (tmp_path / "v.jsonl").read_bytes() == b'{"a":1}\n{"b":2}\n'


def test_jsonl_reopens_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    sink = _jsonl(tmp_path, path, rotate_check_s=0.05)
    sink.start()
    try:
        sink.submit(verdict(0))
        assert _wait(lambda: sink.health()["written"] == 1)
        path.rename(tmp_path / "v.jsonl.1")  # logrotate
        time.sleep(0.1)
        sink.submit(verdict(1))
        assert _wait(lambda: sink.health()["written"] == 2)
        path_gone_later = tmp_path / "v.jsonl"
        assert _wait(path_gone_later.exists)
        path.unlink()  # deleted outright
        time.sleep(0.1)
        sink.submit(verdict(2))
        assert _wait(lambda: sink.health()["written"] == 3)
    finally:
        sink.close()
    assert [r["frame_id"] for r in read_records(tmp_path / "v.jsonl.1")] == [0]
    assert [r["frame_id"] for r in read_records(path)] == [2]
    assert sink.health()["rotations"] == 2


def test_jsonl_keeps_verdicts_in_its_journal_over_a_restart_without_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    first = _jsonl(tmp_path, path)
    first.start()
    for i in range(3):
        first.submit(verdict(i))
    first.close()
    second = _jsonl(tmp_path, path)
    second.start()
    second.submit(verdict(3))
    second.close()
    assert [r["frame_id"] for r in read_records(path)] == [0, 1, 2, 3]


def test_jsonl_refuses_a_folder_or_an_unwritable_path_at_start(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(SinkError, match="is a folder"):
        _jsonl(tmp_path, "d.jsonl").start()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot write"):
        _jsonl(tmp_path, "file/sub/v.jsonl").start()
