"""`edge-inspect run` with the mqtt sink, killed with SIGKILL mid-stream and restarted: every verdict
the service emitted reaches an independent subscriber at least once, the broker publishes the
station's last will, and what the restart replays is flagged late, never presented as current.
The JSON-lines file, the subscriber and the audit end with the same verdicts (one outbox)."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import yaml

from edge.audit.store import AuditStore
from tests.plc.peers import Mosquitto, Subscriber, wait_until
from tests.service_process import jsonl_ids, sigkill, start_service, wait_for_verdicts


def outbox_ids(path: Path, sink: str = "mqtt") -> set[str]:
    """The result ids waiting in the service's outbox for one sink (the test reads it between runs)."""
    with closing(sqlite3.connect(path)) as db:
        return {r for (r,) in db.execute(
            "SELECT e.result_id FROM pending p JOIN entries e ON e.seq = p.seq WHERE p.sink = ?", (sink,))}


def test_sigkill_mid_stream_then_restart_delivers_every_verdict(
    tmp_path: Path, reference_model_path: Path, demo_images: Path, demo_references: Path, broker: Mosquitto
) -> None:
    sub = Subscriber("127.0.0.1", broker.port, "edge-inspect/st1/#").start()
    cfg = {
        "version": "plc-crash-test",
        "cameras": [
            {
                "type": "replay",
                "name": "line1",
                "path": str(demo_images),
                "references": str(demo_references),
                "rate_ppm": 900,
                "loop": True,
            }
        ],
        "engine": {"type": "onnxruntime", "model": str(reference_model_path), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": 1000},
        "sinks": [
            {"type": "jsonl", "path": str(tmp_path / "verdicts.jsonl")},
            {"type": "mqtt", "port": broker.port, "station": "st1", "client_id": "edge-crash-test"},
        ],
        "metrics": {"port": 0},
        "state_dir": str(tmp_path / "state"),
    }
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(cfg))
    jsonl = tmp_path / "verdicts.jsonl"

    def run(args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        return start_service(config, tmp_path, log_name, *args)

    def wait_jsonl(proc: subprocess.Popen[bytes], n: int, log_name: str) -> None:
        wait_for_verdicts(proc, jsonl, n, tmp_path / log_name)

    def kill(proc: subprocess.Popen[bytes]) -> None:
        sigkill(proc)  # mid-stream: frames in flight, the outbox busy

    # run 1: the broker goes down mid-stream, the verdicts pile up in the outbox, then SIGKILL
    proc = run([], "run1.log")
    try:
        wait_jsonl(proc, 25, "run1.log")
        broker.stop()
        n_at_outage = len(jsonl_ids(tmp_path / "verdicts.jsonl"))
        wait_jsonl(proc, n_at_outage + 20, "run1.log")
        kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = jsonl_ids(tmp_path / "verdicts.jsonl")
    outbox = outbox_ids(tmp_path / "state" / "journal" / "outbox.sqlite")
    # neither received nor in the outbox at the kill: the broker has them (acknowledged, not forwarded yet)
    # or the kill came between the JSONL sink's write and the MQTT sink's journal (reported if they never arrive)
    unaccounted = [i for i in first if i not in set(sub.ids("/verdict")) and i not in outbox]
    broker.start()
    # the subscriber first: the service connects within milliseconds of its start and replays at once,
    # and a broker that lost the subscriber's session at its restart keeps nothing for it until then
    assert sub.wait_subscribed(30), "the subscriber did not reconnect to the restarted broker"
    # run 2: replays run 1's outbox (late), judges new parts (current); SIGKILL while the broker is up
    proc = run([], "run2.log")
    try:
        replayed_all = wait_until(lambda: set(first) <= set(sub.ids("/verdict")) or proc.poll() is not None, 240)
        missing = [i for i in first if i not in set(sub.ids("/verdict"))]
        assert replayed_all and not missing, (
            f"run 1's verdicts not replayed: {len(missing)} of {len(first)} missing (positions "
            f"{[first.index(i) for i in missing][:10]}, broker down after {n_at_outage}), service "
            f"{'exited ' + str(proc.returncode) if proc.poll() is not None else 'running'}, subscriber "
            f"{'connected' if sub.client.is_connected() else 'disconnected'}, still in the outbox "
            f"{len(outbox_ids(tmp_path / 'state' / 'journal' / 'outbox.sqlite') & set(missing))}, neither received "
            f"nor in the outbox at the kill {[first.index(i) for i in unaccounted]}; run 2's log:\n"
            + (tmp_path / "run2.log").read_text()[-3000:]
        )
        wait_jsonl(proc, len(first) + 15, "run2.log")
        kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until(lambda: [m.payload for m in sub.on("/state")][-1:] == [b"offline"], 15)  # the last will
    second = jsonl_ids(tmp_path / "verdicts.jsonl")
    # run 3: delivers what run 2 left in its outbox, judges a few parts, stops cleanly
    proc = run(["--frames", "5"], "run3.log")
    try:
        assert proc.wait(240) == 0, (tmp_path / "run3.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    every = jsonl_ids(tmp_path / "verdicts.jsonl")
    assert wait_until(lambda: set(every) <= set(sub.ids("/verdict")), 30)
    sub.stop()

    got = set(sub.ids("/verdict"))
    current = sub.on("st1/verdict")
    late = sub.on("late/verdict")
    replayed = [m for m in late if m.json()["delivery"]["replayed"]]
    print(
        f"SIGKILL: emitted run 1 {len(first)} (broker down after {n_at_outage}), run 2 {len(second) - len(first)}, "
        f"run 3 {len(every) - len(second)}; arrived {len(got & set(every))}/{len(every)} distinct "
        f"({len(sub.ids('/verdict'))} messages); current {len(current)}, late {len(late)} "
        f"(replayed after a restart {len(replayed)}); lost {len(set(every) - got)}"
    )
    assert not set(every) - got, f"lost: {sorted(set(every) - got)[:5]}"
    # one outbox for the JSONL, MQTT and audit sinks: after the kills they hold the same verdicts
    store = AuditStore(tmp_path / "state" / "audit.sqlite")
    audited = store.result_ids()
    store.close()
    assert got == set(every), f"published, never in the JSONL file: {sorted(got - set(every))[:5]}"
    assert audited == set(every), (
        f"JSONL not audited {sorted(set(every) - audited)[:5]}, audited not in JSONL {sorted(audited - set(every))[:5]}"
    )
    for m in current:  # nothing stale presented as current
        d = m.json()["delivery"]
        assert not d["stale"] and not d["replayed"] and d["remaining_ms"] > 0
    for m in late:
        assert m.json()["delivery"]["stale"]
    late_ids = {m.json()["result_id"] for m in late}
    assert set(first[n_at_outage + 5:]) <= late_ids  # held by the outage and the kill: flagged, not current
    assert {m.json()["result_id"] for m in replayed} <= set(second)  # replays are earlier runs' verdicts
    assert [m.payload for m in sub.on("/state")][-1] == b"offline"  # run 3 closed cleanly
