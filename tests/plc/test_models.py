"""The pure models: staleness, MQTT topics and payloads, the OPC UA result and state mapping."""

from __future__ import annotations

import json
import time

from plc.machine_vision import nodeid_table, nodeset_path
from plc.machine_vision.result_model import Counters, result_fields, vision_states
from plc.mqtt_model import Topics, messages
from plc.stale import classify, deadline_wall_ns, expiry_interval_s, margin_ms
from tests.plc.peers import make_verdict


def test_deadline_and_margin_from_the_record() -> None:
    v = make_verdict(0, "REJECT", budget_ms=250.0, decided_after_ms=20.0)
    rec = v.to_dict()
    assert abs(margin_ms(rec) - 230.0) < 0.01
    assert abs(deadline_wall_ns(rec) - (v.decided_wall_ns + 230_000_000)) < 1000
    # schema 2 records carry them: those win
    rec2 = dict(rec, deadline_wall_ns=123, margin_ms=-4.5)
    assert deadline_wall_ns(rec2) == 123 and margin_ms(rec2) == -4.5


def test_classify_current_late_expired_replayed() -> None:
    rec = make_verdict(0, "REJECT").to_dict()
    now = time.time_ns()
    d = classify(rec, now)
    assert not d.stale and d.remaining_ms > 0 and expiry_interval_s(d) == 1
    assert classify(rec, now + 10**9).expired
    assert classify(rec, now, replayed=True).stale
    retried = classify(rec, now, attempts=1)  # retried after a blip, still before its deadline: current
    assert not retried.stale and retried.attempts == 1
    late = make_verdict(1, "REJECT", decided_after_ms=300.0).to_dict()
    assert classify(late, now).late and classify(late, now).stale
    far = dict(rec, deadline_wall_ns=now + 2_500_000_000)
    assert expiry_interval_s(classify(far, now)) == 3  # rounded up to whole seconds


def test_mqtt_messages_per_verdict() -> None:
    topics = Topics("edge-inspect", "st1")
    now = time.time_ns()
    ok = make_verdict(0, "PASS").to_dict()
    rej = make_verdict(1, "REJECT").to_dict()
    assert [m.topic for m in messages(ok, topics, classify(ok, now))] == ["edge-inspect/st1/verdict"]
    out = messages(rej, topics, classify(rej, now))
    assert [m.topic for m in out] == ["edge-inspect/st1/verdict", "edge-inspect/st1/reject"]
    assert out[0].expiry_s is None and out[1].expiry_s == 1
    doc = json.loads(out[1].payload)
    assert doc["result_id"] == rej["result_id"] and doc["station"] == "st1" and doc["delivery"]["stale"] is False
    stale = messages(rej, topics, classify(rej, now, replayed=True))
    assert [m.topic for m in stale] == ["edge-inspect/st1/late/verdict", "edge-inspect/st1/late/reject"]
    assert all(m.expiry_s is None for m in stale)
    assert messages(ok, topics, classify(ok, now), all_verdicts=False) == []
    assert Topics("", "st1").state == "st1/state"


def test_result_fields_of_a_reject() -> None:
    v = make_verdict(7, "REJECT", decided_after_ms=30.0)
    f = result_fields(v.to_dict(), "job-3", recipe="boards")
    assert (f.result_id, f.part_id, f.meas_id, f.job_id) == (v.result_id, v.part_id, "7", "job-3")
    assert f.verdict_code == 2 and f.recipe == "boards" and not f.late and f.margin_ms > 0
    assert f.start_time < f.end_time == f.creation_time
    assert abs((f.end_time - f.start_time).total_seconds() * 1000 - 30.0) < 0.01
    assert f.content[0] == "REJECT" and json.loads(f.content[3])[0]["class"] == "short"
    assert "short" in f.message and f.severity == 500
    fs = result_fields(make_verdict(8, "FAILSAFE").to_dict(), "job-3")
    assert fs.verdict_code == 3 and fs.failsafe_reason == "deadline" and fs.content[1] == "deadline"
    late = result_fields(make_verdict(9, "PASS", decided_after_ms=300.0).to_dict(), "j")
    assert late.late and late.message.endswith("LATE")


def test_vision_states_and_counters() -> None:
    assert vision_states("running") == vision_states("running", False)
    assert (vision_states("running").main, vision_states("running").automatic) == ("Operational", "ContinuousExecution")
    assert vision_states("single").automatic == "SingleExecution"
    assert vision_states("halted").automatic == "Ready"
    assert vision_states("halted", halted_by_method=True).main == "Halted"
    assert vision_states("running", error=True).main == "Error"
    c = Counters(sequence=0xFFFFFFFF)
    c.add("PASS")
    c.add("REJECT")
    c.add("FAILSAFE")
    assert (c.sequence, c.passed, c.rejected, c.failsafe) == (2, 1, 1, 1)


def test_vendored_nodeset() -> None:
    text = nodeset_path().read_text(encoding="utf-8")
    assert "OPC Foundation MIT License" in text and "http://opcfoundation.org/UA/MachineVision" in text
    ids = nodeid_table()
    assert ids["VisionSystemType"] == 1003 and ids["ResultReadyEventType"] == 1024
