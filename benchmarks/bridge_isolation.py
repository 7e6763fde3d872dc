"""Design probe for the PLC bridge (issue 15): MQTT and OPC UA latency with the OPC UA server
(asyncua, pure Python) in the service's process, against the same server in a child process fed
each verdict through a pipe at the same moment.

Why: with asyncua in the service process its per-verdict Python work (variables, event, encryption
for the subscriber) holds the GIL just when the MQTT sink's writer and paho's network thread need
it, so the MQTT path waits behind it. In a child process the two run side by side on the CPUs.

Both arms: the `mqtt` sink (durable outbox, QoS 1) in this process, the `opcua-server` sink
(Basic256Sha256 SignAndEncrypt) in this process or in the child; verdicts at `--rate-ppm` from this
process (no pipeline: the bridge alone); independent subscribers in other processes (`mosquitto_sub`,
an asyncua client at a 10 ms publishing interval, from benchmarks/bridge.py). Arms interleaved,
`--rounds` each. Writes benchmarks/results/bridge-isolation.json and .png.

    .venv/bin/python benchmarks/bridge_isolation.py [--verdicts 300] [--rounds 3] [--rate-ppm 600]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bridge as B  # noqa: E402

from edge.ioloop import IoLoop  # noqa: E402
from edge.registry import sink_registry  # noqa: E402
from tests.plc.peers import make_verdict  # noqa: E402


def _child(conn: Any, work: Path, mqtt_port: int, opcua_port: int) -> None:
    """The OPC UA server sink on its own I/O loop in this child process, fed from the pipe."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    loop = IoLoop("child-io")
    loop.start()
    sink = sink_registry().validate(B.plc_sinks(work, mqtt_port, opcua_port, None)[1]).build(work)  # type: ignore[attr-defined]
    sink.use(loop, None)
    sink.start()
    conn.send("ready")
    while True:
        v = conn.recv()
        if v is None:
            break
        sink.submit(v)
    sink.close()
    loop.stop()


def one_arm(mode: str, args: argparse.Namespace, rig: B.Rig) -> dict[str, Any]:
    work, broker, opcua_port, subscribed = rig.work, rig.broker, rig.opcua_port, rig.subscribed_ns
    reg = sink_registry()
    mqtt = reg.validate(B.plc_sinks(work, broker.port, opcua_port, None)[0]).build(work)  # type: ignore[attr-defined]
    mqtt.start()
    n_sub = len(subscribed)
    if mode == "in-process":
        loop = IoLoop("io")
        loop.start()
        ua = reg.validate(B.plc_sinks(work, broker.port, opcua_port, None)[1]).build(work)  # type: ignore[attr-defined]
        ua.use(loop, None)
        ua.start()
        send = ua.submit
    else:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child, work, broker.port, opcua_port), daemon=True)
        proc.start()
        assert parent.recv() == "ready"
        send = parent.send
    end = time.monotonic() + 60
    while len(subscribed) <= n_sub and time.monotonic() < end:  # the subscriber follows each new server
        time.sleep(0.05)
    time.sleep(1.0)
    decided: dict[str, int] = {}
    period = 60.0 / args.rate_ppm
    t = time.monotonic()
    for i in range(args.verdicts):
        v = make_verdict(i, "REJECT" if i % 4 == 0 else "PASS", budget_ms=1000)
        mqtt.submit(v)
        send(v)
        decided[v.result_id] = v.decided_wall_ns
        t += period
        time.sleep(max(0.0, t - time.monotonic()))
    time.sleep(1.5)
    mqtt.close()
    if mode == "in-process":
        ua.close()
        loop.stop()
    else:
        parent.send(None)
        proc.join(15)
    m, e, d = B.collect(rig.mqtt_txt, rig.opcua_log, decided)
    return {"mqtt_qos1": B.pct(m), "opcua_event": B.pct(e), "opcua_datachange": B.pct(d),
            "_raw": {"mqtt_qos1": m, "opcua_event": e}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verdicts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate-ppm", type=float, default=600.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    rig = B.Rig(Path(tempfile.mkdtemp(prefix="bench-isolation-")), 10.0, ["edge-inspect/bench/verdict"])
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for mode in (("in-process", "child") if r % 2 == 0 else ("child", "in-process")):
                row[mode] = one_arm(mode, args, rig)
                print(f"round {r + 1} {mode}: " + json.dumps({k: v for k, v in row[mode].items() if k != "_raw"}),
                      flush=True)
            rounds.append(row)
    finally:
        rig.stop()
    summary = {
        mode: {path: {q: round(statistics.median(rw[mode][path][q] for rw in rounds), 3) for q in ("p50", "p99")}
               for path in ("mqtt_qos1", "opcua_event", "opcua_datachange")}
        for mode in ("in-process", "child")
    }
    result = {
        "benchmark": "bridge-isolation",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load_average_end": os.getloadavg()},
        "settings": vars(args) | {"out": str(args.out)},
        "median_of_rounds_ms": summary,
        "rounds": [{m: {k: v for k, v in a.items() if k != "_raw"} for m, a in rw.items()} for rw in rounds],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bridge-isolation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rounds, args.out / "bridge-isolation.png")
    print(json.dumps(summary, indent=1))
    return 0


def plot(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    data, labels = [], []
    for mode in ("in-process", "child"):
        for p in ("mqtt_qos1", "opcua_event"):
            data.append([x for rw in rounds for x in rw[mode]["_raw"][p]] or [float("nan")])
            labels.append(f"{p}\n(OPC UA server {mode})")
    ax.boxplot(data, whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.axhline(5, color="tab:red", ls="--", lw=1, label="MQTT target p99 5 ms")
    ax.axhline(15, color="tab:orange", ls="--", lw=1, label="OPC UA target p99 15 ms")
    ax.set_ylabel("decision -> subscriber (ms), whiskers p1/p99")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
