"""The MQTT session against a real mosquitto on loopback, read by an independent subscriber."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge.errors import TransientSinkError
from edge.sinks.journal import JournalEntry
from plc.mqtt_link import LinkSettings, MqttLink
from plc.mqtt_model import Topics
from tests.plc.peers import Mosquitto, Subscriber, make_tls_files, make_verdict, wait_until


def entry(i: int, kind: str = "PASS", replayed: bool = False, attempts: int = 0, **kw: float) -> JournalEntry:
    v = make_verdict(i, kind, **kw)
    return JournalEntry(i, v.result_id, json.dumps(v.to_dict()), time.time_ns(), attempts, replayed)


def settings(port: int, **kw: object) -> LinkSettings:
    base: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "topics": Topics("edge-inspect", "st1"), "client_id": "edge-test",
        "ack_timeout_s": 10.0, "connect_timeout_s": 10.0,
    }
    base.update(kw)
    return LinkSettings(**base)  # type: ignore[arg-type]


def test_verdicts_rejects_state_and_expiry(broker: Mosquitto) -> None:
    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
    link = MqttLink(settings(broker.port))
    link.open()
    try:
        assert link.connected
        batch = [entry(0, "PASS"), entry(1, "REJECT"), entry(2, "FAILSAFE"), entry(3, "PASS")]
        link.deliver(batch)
        assert wait_until(lambda: len(sub.on("/reject")) == 2 and len(sub.on("/verdict")) == 4, 10)
        assert sub.ids("/verdict") == [e.result_id for e in batch]
        assert sub.ids("/reject") == [batch[1].result_id, batch[2].result_id]
        rej = sub.on("st1/reject")[0]
        doc = rej.json()
        assert doc["schema"] >= 1 and doc["station"] == "st1" and doc["verdict"] == "REJECT"
        assert doc["delivery"]["stale"] is False and doc["delivery"]["remaining_ms"] > 0
        assert doc["detections"][0]["class"] == "short"
        # the reject expires with its part's deadline (250 ms away -> 1 s, MQTT's resolution)
        assert rej.properties["MessageExpiryInterval"] == 1
        assert rej.properties["ContentType"] == "application/json"
        assert "MessageExpiryInterval" not in sub.on("st1/verdict")[0].properties
        assert [m.payload for m in sub.on("/state")] == [b"online"]
        assert sub.on("/late/verdict") == []
        assert link.health()["messages_acked"] == 6 and link.last_ack_wall_ns is not None
    finally:
        link.close()
    assert wait_until(lambda: [m.payload for m in sub.on("/state")] == [b"online", b"offline"], 10)
    sub.stop()


def test_stale_verdicts_go_to_late_topics(broker: Mosquitto) -> None:
    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
    link = MqttLink(settings(broker.port))
    link.open()
    try:
        late = entry(0, "REJECT", decided_after_ms=300.0)  # decided after its 250 ms deadline
        expired = entry(1, "REJECT", budget_ms=-5.0, decided_after_ms=0.0)  # deadline already passed
        replayed = entry(2, "PASS", replayed=True)  # from an earlier run
        retried = entry(3, "FAILSAFE", attempts=2)  # held back by a short outage, deadline still ahead
        current = entry(4, "REJECT")
        link.deliver([late, expired, replayed, retried, current])
        assert wait_until(lambda: len(sub.on("/verdict")) == 5, 10)
        late_ids = sub.ids("late/verdict")
        assert late_ids == [late.result_id, expired.result_id, replayed.result_id]
        assert sub.ids("st1/verdict") == [retried.result_id, current.result_id]
        assert sub.ids("st1/reject") == [retried.result_id, current.result_id]  # presented as current
        assert sub.ids("late/reject") == [late.result_id, expired.result_id]
        docs = {m.json()["result_id"]: m.json()["delivery"] for m in sub.on("late/verdict")}
        assert docs[late.result_id]["late"] and docs[late.result_id]["margin_ms"] < 0
        assert docs[expired.result_id]["expired"] and docs[expired.result_id]["remaining_ms"] <= 0
        assert docs[replayed.result_id]["replayed"]
        assert all(d["stale"] for d in docs.values())
        assert sub.on("st1/reject")[0].json()["delivery"]["attempts"] == 2
        assert all("MessageExpiryInterval" not in m.properties for m in sub.on("late/reject"))
        assert link.published_stale == 3 and link.published_current == 2
    finally:
        link.close()
        sub.stop()


def test_not_connected_raises_transient(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "b")  # configured, never started: nothing listens on its port
    link = MqttLink(settings(b.port, connect_timeout_s=0.5))
    link.open()
    try:
        with pytest.raises(TransientSinkError, match="not connected"):
            link.deliver([entry(0)])
    finally:
        link.close()


def test_password_file_auth(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "b", users={"line": "s3cret", "reader": "r"})
    b.start()
    try:
        sub = Subscriber("127.0.0.1", b.port, "edge-inspect/#", username="reader", password="r").start()
        wrong = MqttLink(settings(b.port, username="line", password="nope", connect_timeout_s=2.0, client_id="w"))
        wrong.open()
        try:
            assert not wrong.connected
            assert wrong.last_error and "refused" in wrong.last_error
            with pytest.raises(TransientSinkError):
                wrong.deliver([entry(0)])
        finally:
            wrong.close()
        anon = MqttLink(settings(b.port, connect_timeout_s=2.0, client_id="anon"))
        anon.open()
        try:
            assert not anon.connected
        finally:
            anon.close()
        good = MqttLink(settings(b.port, username="line", password="s3cret"))
        good.open()
        try:
            e = entry(1, "REJECT")
            good.deliver([e])
            assert wait_until(lambda: sub.ids("st1/reject") == [e.result_id], 10)
        finally:
            good.close()
        sub.stop()
    finally:
        b.stop()


def test_tls_listener(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    b = Mosquitto(tmp_path / "b", tls=tls)
    b.start()
    try:
        sub = Subscriber("127.0.0.1", b.port, "edge-inspect/#", ca_file=tls.ca).start()
        link = MqttLink(settings(b.port, ca_file=str(tls.ca), tls=True))
        link.open()
        try:
            e = entry(0, "REJECT")
            link.deliver([e])
            assert wait_until(lambda: sub.ids("st1/reject") == [e.result_id], 10)
        finally:
            link.close()
        sub.stop()
        # a broker certificate from another CA is refused
        other = make_tls_files(tmp_path / "other")
        bad = MqttLink(settings(b.port, ca_file=str(other.ca), tls=True, connect_timeout_s=2.0, client_id="bad"))
        bad.open()
        try:
            assert not bad.connected
        finally:
            bad.close()
        # plain MQTT to the TLS listener does not get through either
        plain = MqttLink(settings(b.port, connect_timeout_s=2.0, client_id="plain"))
        plain.open()
        try:
            assert not plain.connected
        finally:
            plain.close()
    finally:
        b.stop()


def test_a_reject_expires_in_the_broker_with_its_deadline(broker: Mosquitto) -> None:
    """A subscriber that was away past the part's deadline never receives the reject as a command."""
    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#", client_id="away").start()
    sub.stop()  # away, with a persistent session: the broker queues its QoS 1 messages
    link = MqttLink(settings(broker.port))
    link.open()
    try:
        e = entry(0, "REJECT", budget_ms=300.0, decided_after_ms=10.0)  # expiry interval: 1 s
        link.deliver([e])
    finally:
        link.close()
    time.sleep(2.5)  # past the deadline and the expiry
    back = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#", client_id="away", resume=True).start()
    try:
        assert wait_until(lambda: len(back.on("st1/verdict")) == 1, 10)
        time.sleep(0.5)
        print("after the deadline the subscriber got:", [m.topic for m in back.messages])
        assert back.ids("st1/verdict") == [e.result_id]  # the record (no expiry) is there
        assert back.on("st1/reject") == []  # the command expired with its part
    finally:
        back.stop()
