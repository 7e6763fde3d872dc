"""The audit database and its sink: rows, queries, paging, CSV, retention, changes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from edge.audit import AuditConfig, AuditStore, VerdictQuery
from edge.audit.export import CSV_COLUMNS, iter_csv
from edge.audit.sink import AuditSink
from edge.verdict import Detection, FailsafeReason, Reason, Verdict, VerdictKind, new_result_id

T0 = 1_800_000_000_000_000_000  # a fixed wall clock (ns)


def make_verdict(
    i: int,
    kind: VerdictKind = VerdictKind.PASS,
    camera: str = "cam",
    cls: str | None = None,
    wall_ns: int | None = None,
    reason: FailsafeReason | None = None,
) -> Verdict:
    wall = T0 + i * 1_000_000_000 if wall_ns is None else wall_ns
    dets = (Detection(1, cls, 0.9, (10.0, 20.0, 30.0, 40.0)),) if cls else ()
    reasons: tuple[Reason, ...] = ()
    if kind is VerdictKind.REJECT:
        reasons = (Reason("max_count", f"{cls}: 1 > 0", dets[0] if dets else None),)
    elif kind is VerdictKind.FAILSAFE:
        reasons = (Reason("failsafe", (reason or FailsafeReason.DEADLINE).value),)
    return Verdict(
        result_id=new_result_id(wall),
        part_id=f"part-{i}",
        frame_id=i,
        camera=camera,
        verdict=kind,
        reasons=reasons,
        detections=dets,
        captured_ns=1000 + i,
        arrived_ns=2000 + i,
        decided_ns=3000 + i,
        deadline_ns=10_000 + i,
        decided_wall_ns=wall,
        latencies_ms={"total": 12.5, "infer": 8.0},
        model_id="m1",
        config_version="1+abc",
        failsafe_reason=(reason or FailsafeReason.DEADLINE) if kind is VerdictKind.FAILSAFE else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore(tmp_path / "a" / "audit.db")
    s.open()
    yield s
    s.close()


def test_rows_hold_the_whole_verdict_and_replays_are_idempotent(store: AuditStore) -> None:
    v = make_verdict(1, VerdictKind.REJECT, cls="open")
    assert store.add_verdicts([v.to_dict()]) == 1
    assert store.add_verdicts([v.to_dict()]) == 0  # a replayed journal entry keeps the first row
    row = store.verdict(v.result_id)
    assert row is not None
    assert row["part_id"] == "part-1" and row["camera"] == "cam" and row["verdict"] == "REJECT"
    assert row["classes"] == ["open"] and row["rules"] == ["max_count"]
    assert row["detections"][0]["box"] == [10.0, 20.0, 30.0, 40.0]
    assert row["reasons"][0]["message"] == "open: 1 > 0"
    assert row["model_id"] == "m1" and row["config_version"] == "1+abc"
    assert row["latencies"] == {"total": 12.5, "infer": 8.0} and row["latency_ms"] == 12.5
    assert row["decided_wall_ns"] == T0 + 1_000_000_000 and row["captured_ns"] == 1001
    assert row["evidence_id"] is None
    store.add_evidence(v.result_id, {"image": "x.jpg"}, 123)
    assert store.verdict(v.result_id)["evidence_id"] == v.result_id  # type: ignore[index]
    # WAL, so readers do not wait for the writer
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queries_filter_and_page_newest_first(store: AuditStore) -> None:
    vs = []
    for i in range(30):
        kind = VerdictKind.REJECT if i % 3 == 0 else VerdictKind.PASS
        vs.append(
            make_verdict(i, kind, camera="a" if i % 2 else "b", cls="short" if kind is VerdictKind.REJECT else None)
        )
    vs.append(make_verdict(30, VerdictKind.FAILSAFE, reason=FailsafeReason.RING_OVERFLOW))
    store.add_verdicts([v.to_dict() for v in vs])
    assert store.count() == 31
    page = store.verdicts(VerdictQuery(limit=7))
    assert [r["frame_id"] for r in page["items"]] == [30, 29, 28, 27, 26, 25, 24]
    seen = [r["frame_id"] for r in page["items"]]
    while page["next"]:
        page = store.verdicts(VerdictQuery(limit=7, before=page["next"]))
        seen += [r["frame_id"] for r in page["items"]]
    assert seen == list(range(30, -1, -1))
    rejects = store.verdicts(VerdictQuery(verdict="REJECT", limit=100))["items"]
    assert [r["frame_id"] for r in rejects] == [27, 24, 21, 18, 15, 12, 9, 6, 3, 0]
    assert {r["frame_id"] for r in store.verdicts(VerdictQuery(cls="short", camera="a", limit=100))["items"]} == {
        27,
        21,
        15,
        9,
        3,
    }
    assert store.verdicts(VerdictQuery(cls="shor", limit=100))["items"] == []  # whole class names only
    assert [r["frame_id"] for r in store.verdicts(VerdictQuery(part_id="part-4"))["items"]] == [4]
    window = store.verdicts(VerdictQuery(since_ns=T0 + 10 * 10**9, until_ns=T0 + 13 * 10**9, limit=100))
    assert [r["frame_id"] for r in window["items"]] == [12, 11, 10]
    fs = store.verdicts(VerdictQuery(failsafe_reason="ring_overflow"))["items"]
    assert [r["frame_id"] for r in fs] == [30]


def test_csv_export_of_a_time_range(store: AuditStore) -> None:
    vs = [
        make_verdict(i, VerdictKind.REJECT if i == 5 else VerdictKind.PASS, cls="spur" if i == 5 else None)
        for i in range(450)
    ]
    store.add_verdicts([v.to_dict() for v in vs])
    text = "".join(iter_csv(store, T0 + 3 * 10**9, T0 + 403 * 10**9))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [int(r["frame_id"]) for r in rows] == list(range(3, 403))
    five = rows[2]
    assert five["verdict"] == "REJECT" and five["classes"] == "spur" and five["rules"] == "max_count"
    assert five["decided_utc"].endswith("+00:00") and five["detections"].startswith("spur@0.9:")


def test_retention_by_age_and_rows(tmp_path: Path) -> None:
    s = AuditStore(tmp_path / "r.db", retention_days=1.0, max_rows=None)
    now = time.time_ns()
    old = [make_verdict(i, wall_ns=now - 2 * 86400 * 10**9 + i) for i in range(5)]
    new = [make_verdict(100 + i, wall_ns=now - 1000 + i) for i in range(5)]
    s.add_verdicts([v.to_dict() for v in old + new])
    assert s.purge(now) == 5
    assert s.count() == 5
    s.max_rows = 2
    assert s.purge(now) == 3
    assert sorted(r["frame_id"] for r in s.verdicts(VerdictQuery(limit=10))["items"]) == [103, 104]
    s.close()


def test_changes_are_recorded_with_before_and_after(store: AuditStore) -> None:
    cid = store.add_change("token:ops", "decision", {"min_confidence": 0.25}, {"min_confidence": 0.4})
    store.add_change("token:ops", "recipe", "a", "b", outcome="refused", detail="unknown recipe")
    rows = store.changes()
    assert [r["what"] for r in rows] == ["recipe", "decision"]
    assert rows[1]["before"] == {"min_confidence": 0.25} and rows[1]["after"] == {"min_confidence": 0.4}
    assert rows[0]["outcome"] == "refused" and rows[0]["detail"] == "unknown recipe"
    assert store.change(cid)["who"] == "token:ops"  # type: ignore[index]
    assert [r["id"] for r in store.changes(what="decision")] == [cid]


def test_sink_writes_every_submitted_verdict_in_batches(tmp_path: Path) -> None:
    cfg = AuditConfig(enabled=True, path="x/audit.db", batch_size=64)
    store = AuditStore(cfg.resolve_path(tmp_path))
    sink = AuditSink(store, batch_size=cfg.batch_size, journal_path=tmp_path / "journal" / "audit.sqlite")
    sink.start()
    vs = [make_verdict(i, wall_ns=time.time_ns()) for i in range(1000)]
    for v in vs:
        assert sink.submit(v)
    sink.close(timeout=30)
    assert store.result_ids() == {v.result_id for v in vs}
    h = sink.health()
    assert h["kind"] == "durable"
    assert h["submitted"] == h["written"] == 1000 and h["dropped"] == 0 and h["errors"] == 0
    assert h["backlog"] == 0
    assert (tmp_path / "x" / "audit.db").is_file()
    store.close()


def test_sink_keeps_verdicts_in_its_journal_while_the_audit_file_is_unwritable(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "blocked" / "audit.db")
    (tmp_path / "blocked").write_text("a file where the folder should be")  # the store cannot open
    sink = AuditSink(store, journal_path=tmp_path / "j.sqlite")
    sink.start()
    vs = [make_verdict(i, wall_ns=time.time_ns()) for i in range(20)]
    for v in vs:
        sink.submit(v)
    deadline = time.monotonic() + 30
    while sink.health()["errors"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.health()["live"] is False and sink.health()["written"] == 0
    sink.close(timeout=1)
    # the next start (the folder is usable again) delivers what waited in the journal
    (tmp_path / "blocked").unlink()
    again = AuditSink(store, journal_path=tmp_path / "j.sqlite")
    again.start()
    deadline = time.monotonic() + 30
    while again.health()["written"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    again.close(timeout=10)
    assert store.result_ids() == {v.result_id for v in vs}
    assert again.health()["replayed"] == 20
    store.close()


def test_sink_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "q.db")
    sink = AuditSink(store, queue_size=16, journal_path=tmp_path / "j.sqlite")  # not started: nothing drains
    t = time.monotonic()
    results = [sink.submit(make_verdict(i)) for i in range(40)]
    assert time.monotonic() - t < 1.0
    assert results.count(True) == 16 and sink.health()["dropped"] == 24


def test_sink_in_an_outbox_writes_each_verdict_once_beside_another_durable_sink(tmp_path: Path) -> None:
    """In the service the audit is an outbox member: the verdict's JSON is journaled once for it and
    the JSON-lines sink, both get every verdict, and nothing waits in the outbox afterwards."""
    from edge.sinks.jsonl import JsonlSink
    from edge.sinks.outbox import Outbox

    store = AuditStore(tmp_path / "audit.db")
    audit = AuditSink(store)
    jsonl = JsonlSink("jsonl", tmp_path / "verdicts.jsonl")
    outbox = Outbox([audit, jsonl], tmp_path / "journal" / "outbox.sqlite")
    for s in (outbox, audit, jsonl):
        s.start()
    vs = [make_verdict(i, wall_ns=time.time_ns()) for i in range(50)]
    for v in vs:
        assert outbox.submit(v) and audit.submit(v) and jsonl.submit(v)  # what the emitter does
        time.sleep(0.002)  # at line rate: small batches
    for s in (outbox, audit, jsonl):
        s.close(timeout=30)
    assert store.result_ids() == {v.result_id for v in vs}
    lines = [json.loads(x)["result_id"] for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert lines == [v.result_id for v in vs]
    assert outbox.health()["journaled"] == 50 and audit.health()["journaled"] == 50
    assert audit.health()["written"] == 50 and audit.health()["backlog"] == 0
    with closing(sqlite3.connect(tmp_path / "journal" / "outbox.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0  # collected once all delivered
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
    store.close()


def test_sink_spills_to_its_journal_during_an_outage_and_catches_up_in_the_same_run(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "blocked" / "audit.db")
    (tmp_path / "blocked").write_text("a file where the folder should be")
    sink = AuditSink(store, journal_path=tmp_path / "j.sqlite")
    sink.start()
    vs = [make_verdict(i, wall_ns=time.time_ns()) for i in range(30)]
    for v in vs[:20]:
        sink.submit(v)
    deadline = time.monotonic() + 30
    while sink.health()["journaled"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    h = sink.health()
    assert h["live"] is False and h["journaled"] == 20 and h["backlog"] == 20 and h["written"] == 0
    (tmp_path / "blocked").unlink()  # the disk is usable again
    for v in vs[20:]:
        sink.submit(v)
    deadline = time.monotonic() + 60
    while sink.health()["written"] < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    h = sink.health()
    sink.close(timeout=10)
    assert h["live"] is True and h["written"] == 30 and h["backlog"] == 0 and h["dropped"] == 0
    assert store.result_ids() == {v.result_id for v in vs}
    store.close()


def test_a_verdict_is_serialised_once_for_every_durable_sink() -> None:
    v = make_verdict(1)
    text = v.to_json()
    assert v.to_json() is text and json.loads(text) == v.to_dict()


def test_rows_name_the_threshold_set_and_an_older_database_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # the verdicts table as the first release wrote it
    old.execute(
        "CREATE TABLE verdicts (result_id TEXT PRIMARY KEY, decided_wall_ns INTEGER NOT NULL, part_id TEXT NOT NULL, "
        "frame_id INTEGER, camera TEXT NOT NULL, verdict TEXT NOT NULL, failsafe_reason TEXT, classes TEXT NOT NULL, "
        "rules TEXT NOT NULL, reasons TEXT NOT NULL, detections TEXT NOT NULL, model_id TEXT, config_version TEXT, "
        "recipe TEXT, captured_ns INTEGER, arrived_ns INTEGER, decided_ns INTEGER, deadline_ns INTEGER, "
        "deadline_wall_ns INTEGER, margin_ms REAL, latency_ms REAL, latencies TEXT NOT NULL, schema_version INTEGER)"
    )
    old.execute("INSERT INTO verdicts (result_id, decided_wall_ns, part_id, camera, verdict, classes, rules, reasons, "
                "detections, latencies) VALUES ('r-old', 1, 'p', 'cam', 'PASS', '', '', '[]', '[]', '{}')")
    old.commit()
    old.close()
    store = AuditStore(path)
    store.open()
    try:
        base = make_verdict(1, VerdictKind.REJECT, cls="open")
        v = Verdict(**{**{f: getattr(base, f) for f in base.__dataclass_fields__ if f != "_json"},
                       "decision_set": "night", "rules_id": "0123456789ab"})
        assert store.add_verdicts([v.to_dict()]) == 1
        row = store.verdict(v.result_id)
        assert row is not None and row["decision_set"] == "night" and row["rules_id"] == "0123456789ab"
        assert row["schema_version"] == 3
        kept = store.verdict("r-old")
        assert kept is not None and kept["decision_set"] is None  # the earlier row stays, without a set
        text = "".join(iter_csv(store, None, None))
        rec = next(r for r in csv.DictReader(io.StringIO(text)) if r["result_id"] == v.result_id)
        assert rec["decision_set"] == "night" and rec["rules_id"] == "0123456789ab"
    finally:
        store.close()
