"""The durable MQTT sink against a real mosquitto: a broker outage mid-stream loses nothing, and
nothing stale is presented as current. Each test prints what it injected and what arrived."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge.registry import sink_registry
from plc.mqtt import MqttSink, MqttSinkConfig
from tests.plc.peers import Mosquitto, Subscriber, journal_ids, journaled_while_waiting, make_verdict, wait_until


def make_sink(tmp_path: Path, port: int, **kw: Any) -> MqttSink:
    cfg: dict[str, Any] = {
        "type": "mqtt",
        "port": port,
        "station": "st1",
        "client_id": "edge-sink-test",
        "connect_timeout_s": 5.0,
        "journal": {"path": str(tmp_path / "outbox.sqlite"), "retry_initial_s": 0.1, "retry_max_s": 0.5},
    }
    cfg.update(kw)
    model = sink_registry().model("mqtt")  # found through the entry point
    assert model is MqttSinkConfig
    sink = model.model_validate(cfg).build(tmp_path)  # type: ignore[attr-defined]
    assert isinstance(sink, MqttSink)
    return sink


def check_no_stale_as_current(sub: Subscriber) -> int:
    """Every message on a current topic was current when published; returns how many were stale (late/)."""
    for m in sub.on("st1/verdict") + sub.on("st1/reject"):
        d = m.json()["delivery"]
        assert not d["stale"] and not d["replayed"] and d["remaining_ms"] > 0, d
        assert m.wall_ns <= d["deadline_wall_ns"] + 1_500_000_000  # at most MQTT's 1 s expiry resolution late
    for m in sub.on("late/verdict") + sub.on("late/reject"):
        assert m.json()["delivery"]["stale"]
    return len(sub.on("late/verdict"))


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
    sink = make_sink(tmp_path, broker.port, behind_backlog=10,
                     journal={"path": str(tmp_path / "outbox.sqlite"), "retry_initial_s": 0.1, "retry_max_s": 0.5,
                              "batch_size": 5})
    sink.start()
    sent: list[str] = []
    try:
        def burst(n: int, start: int, budget_ms: float = 250.0) -> None:
            for i in range(start, start + n):
                v = make_verdict(i, "REJECT" if i % 5 == 0 else "PASS", budget_ms=budget_ms)
                assert sink.submit(v)
                sent.append(v.result_id)
                time.sleep(0.01)

        burst(50, 0, budget_ms=5000)  # current even on a loaded host
        assert wait_until(lambda: sink.health()["written"] == 50, 30)
        broker.stop()  # mid-stream
        assert wait_until(lambda: not sink.health()["connected"], 10)
        burst(50, 50)  # while the broker is down: into the outbox
        assert wait_until(lambda: sink.health()["backlog"] >= 1, 5)
        down = sink.health()
        assert not down["live"] and down["written"] < 100
        time.sleep(1.5)  # the outage outlasts the 250 ms deadlines of what is waiting
        broker.start()
        burst(50, 100)
        assert wait_until(lambda: sink.health()["written"] == 150, 60), sink.health()
        current_before = len(sub.on("st1/verdict"))
        burst(20, 150, budget_ms=5000)  # reconnected: current again
        assert wait_until(lambda: sink.health()["written"] == 170, 30), sink.health()
        assert wait_until(lambda: len(sub.on("st1/verdict")) >= current_before + 15, 10)
        assert wait_until(lambda: set(sent) <= set(sub.ids("/verdict")), 30)
    finally:
        sink.close(timeout=10)
        sub.stop()
        broker.stop()
    ids = set(sub.ids("/verdict"))
    late = check_no_stale_as_current(sub)
    h = sink.health()
    print(
        f"broker restart: injected {len(sent)}, arrived {len(ids & set(sent))} distinct "
        f"({len(sub.ids('/verdict'))} messages), current {len(sub.on('st1/verdict'))}, late {late}, "
        f"sink written {h['written']} dropped {h['dropped']} expired {h['expired']} errors {h['errors']}"
    )
    assert set(sent) <= ids, f"lost: {sorted(set(sent) - ids)[:5]}"
    assert h["dropped"] == 0 and h["expired"] == 0
    assert late >= 1  # what waited out the outage was published as late, not as current
    assert len(sub.on("st1/verdict")) >= 65  # before the outage and after the reconnection: current
    states = [m.payload.decode() for m in sub.on("/state")]
    print("station states:", states)
    assert states[-1] == "offline"  # clean close
    # while it worked off the outbox the station said it was behind, then online again
    assert "behind" in states and "online" in states[states.index("behind"):]


def test_outbox_survives_a_restart_and_is_replayed_as_late(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started: the first run cannot deliver
    first = make_sink(tmp_path, broker.port, connect_timeout_s=0.5)
    first.start()
    sent = []
    for i in range(20):
        v = make_verdict(i, "REJECT")
        first.submit(v)
        sent.append(v)
    assert wait_until(lambda: first.health()["journaled"] == 20, 10)
    first.close(timeout=1.0)
    broker.start()
    try:
        sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
        second = make_sink(tmp_path, broker.port)
        second.start()
        assert wait_until(lambda: second.health()["written"] == 20, 30), second.health()
        second.close(timeout=5)
        assert wait_until(lambda: len(sub.ids("late/verdict")) == 20, 10)
        docs = [m.json() for m in sub.on("late/verdict")]
        print(f"restart replay: injected 20, arrived {len(docs)} on late/, {len(sub.on('st1/reject'))} as current")
        assert [d["result_id"] for d in docs] == [v.result_id for v in sent]  # original ids, in order
        for d, v in zip(docs, sent, strict=True):
            assert d["timestamps_ns"]["decided_wall"] == v.decided_wall_ns  # original timestamps
            assert d["delivery"]["replayed"] and d["delivery"]["stale"]
        assert sub.on("st1/reject") == [] and sub.on("st1/verdict") == []
        assert second.health()["replayed"] == 20
        sub.stop()
    finally:
        broker.stop()


def test_verdicts_are_journaled_while_a_delivery_waits_on_a_frozen_broker(tmp_path: Path, broker: Mosquitto) -> None:
    """A broker that stops answering (SIGSTOP: the connection stays up, no PUBACK comes) holds the
    writer in a delivery for up to `ack_timeout_s`; what is submitted meanwhile is still on disk
    within a wait slice, so a crash of the service at that moment would lose none of it."""
    import os
    import signal
    def on_disk() -> set[str]:
        return journal_ids(tmp_path / "outbox.sqlite")

    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
    sink = make_sink(tmp_path, broker.port, ack_timeout_s=30.0)
    sink.start()
    assert broker.proc is not None
    try:
        assert wait_until(lambda: sink.link.connected, 10)
        first = make_verdict(0, budget_ms=60_000)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            assert sink.submit(first)
            assert wait_until(lambda: first.result_id in on_disk(), 5)
            time.sleep(0.3)  # the writer is in deliver(), waiting for the PUBACK of `first`
            later = [make_verdict(i, budget_ms=60_000) for i in range(1, 11)]
            journaled_s = journaled_while_waiting(sink, later, on_disk)
            assert not sub.ids("/verdict")  # the broker is frozen: nothing was delivered
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        every = [first.result_id] + [v.result_id for v in later]
        assert wait_until(lambda: set(every) <= set(sub.ids("/verdict")), 30)
        assert wait_until(lambda: not on_disk(), 10)
        print(f"frozen broker: 10 verdicts journaled {journaled_s * 1e3:.0f} ms after submit while a delivery "
              f"waited; {len(set(sub.ids('/verdict')))} of 11 delivered after SIGCONT")
    finally:
        sink.close(timeout=10)
        sub.stop()
