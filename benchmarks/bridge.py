"""PLC bridge benchmark: decision -> independent subscriber latency, and the pipeline's throughput
with the three PLC sinks on against none.

- Latency (the pipeline paced at a line rate on the replay camera, `--rate-ppm`): the service runs
  the `mqtt` sink (QoS 1, durable outbox, to a mosquitto on a free loopback port) and the
  `opcua-server` sink (Basic256Sha256 SignAndEncrypt, a read-only user). Independent subscribers
  in other processes: `mosquitto_sub` (its receive time, %U) on the station's verdict topic, and an
  asyncua client (publishing interval `--publishing-ms`, <= 10 ms) subscribed to the
  ResultReadyEvents (CreationTime = the decision) and to data changes of `Station.DecidedTime`.
  Latency = receipt (wall clock) - the verdict's `decided_wall_ns`, p50/p99 per path.
  The floor, measured at the same time: a bare paho client in its own process (no network thread,
  no journal, no service) publishes QoS 1 at the line rate to the same broker and `mosquitto_sub`;
  its send -> receipt p50/p99 is what this host and broker give any publisher at that moment, and
  `mqtt_over_floor_ms` is the service's figure less the floor's.
- Throughput, interleaved round by round (the order alternates): the pipeline saturated
  (`max_in_flight` 2, rate 0) with no sinks, then with all three PLC sinks (mqtt, opcua-server,
  opcua-client writing into a PLC stand-in server in the worker process); ratio = fps(all) / fps(none).
  The test rig's own processes (broker, the OPC UA subscriber and PLC stand-in, mosquitto_sub) run
  on the same CPUs: their CPU per frame is reported (`peers_cpu_ms_per_frame_*`); on a station
  they are other machines. benchmarks/headroom.py measures what CPU per frame costs in throughput.

Targets (issue #15, this 2-core host): MQTT p99 <= 5 ms, OPC UA p99 <= 15 ms, throughput >= 0.97x.
Writes benchmarks/results/bridge.json and bridge.png (with `--opcua-process`, the opcua-server sink's
`process: true`: bridge-opcua-process.json / .png).

    .venv/bin/python benchmarks/bridge.py [--frames 200] [--rounds 3] [--rate-ppm 300]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FRAME_MODEL = REPO / "models" / "pcb-yolo11n-320.onnx"

from proc_cpu import process_cpu_s, thread_cpu_ms  # noqa: E402

from edge.app import build_service  # noqa: E402
from edge.config import parse_config  # noqa: E402
from edge.demo import DEMO_DATA  # noqa: E402
from plc.certs import make_leaf, write_keypair  # noqa: E402
from tests.plc.peers import Mosquitto, free_port  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"


# -- the worker process: OPC UA subscriber + PLC stand-in ----------------------------------------------
async def _worker(args: argparse.Namespace) -> None:
    from asyncua import Client, Server, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    from plc.machine_vision import NAMESPACE_URI, RESULT_READY_EVENT_TYPE
    from plc.machine_vision.server import STATION_NS

    out = open(args.out_file, "a", buffering=1)  # one line per notification, flushed

    plc = Server()  # the PLC stand-in for the opcua-client sink
    await plc.init()
    plc.set_endpoint(f"opc.tcp://127.0.0.1:{args.plc_port}/plc")
    plc.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns_plc = await plc.register_namespace("urn:bench:plc")
    db = await plc.nodes.objects.add_object(ua.NodeId(ua.String("DB"), ua.Int16(ns_plc)), "DB")
    for name, vt in (("VerdictCode", ua.VariantType.Int16), ("PartId", ua.VariantType.String),
                     ("Sequence", ua.VariantType.UInt32)):
        node = await db.add_variable(ua.NodeId(ua.String(f"DB.{name}"), ua.Int16(ns_plc)), name,
                                     ua.Variant("" if vt == ua.VariantType.String else 0, vt))
        await node.set_writable()
    await plc.start()
    print("ready", flush=True)

    class Handler:
        def event_notification(self, event: Any) -> None:
            now = time.time_ns()
            out.write(json.dumps({"kind": "event", "decided": _ns(event.CreationTime), "recv": now}) + "\n")

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            now = time.time_ns()
            if isinstance(val, dt.datetime) and val.year > 2000:
                out.write(json.dumps({"kind": "datachange", "decided": _ns(val), "recv": now}) + "\n")

        def status_change_notification(self, status: Any) -> None:
            pass

    pause = Path(args.out_file + ".pause")  # the throughput rounds run without this subscriber
    while True:  # each latency run starts a station server; follow it
        if pause.exists():
            await asyncio.sleep(0.2)
            continue
        client = Client(args.url, timeout=10, watchdog_intervall=10.0)  # a loaded host can stall 1 s
        client.application_uri = "urn:edge-inspect:bench-client"
        client.set_user(USER)
        client.set_password(PASSWORD)
        try:
            await client.set_security(SecurityPolicyBasic256Sha256, args.cert, args.key,
                                      mode=ua.MessageSecurityMode.SignAndEncrypt)
            await client.connect()
        except Exception:
            await asyncio.sleep(0.2)
            continue
        try:
            mv = await client.get_namespace_index(NAMESPACE_URI)
            ns = await client.get_namespace_index(STATION_NS)
            sub = await client.create_subscription(
                ua.CreateSubscriptionParameters(RequestedPublishingInterval=args.publishing_ms,
                                                RequestedMaxKeepAliveCount=100, RequestedLifetimeCount=1000),
                Handler())
            await sub.subscribe_events(client.get_node(ua.NodeId(ua.String("VisionSystem"), ua.Int16(ns))),
                                       client.get_node(ua.NodeId(ua.Int32(RESULT_READY_EVENT_TYPE), ua.Int16(mv))))
            await sub.subscribe_data_change(client.get_node(ua.NodeId(ua.String("Station.DecidedTime"), ua.Int16(ns))),
                                            sampling_interval=0)
            print("subscribed", time.time_ns(), flush=True)
            while not pause.exists():
                await asyncio.sleep(0.2)
                await client.check_connection()
        except Exception as exc:
            print(f"subscriber: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            try:
                await client.disconnect()
            except Exception:
                pass


FLOOR_TOPIC = "edge-inspect/bench/floor"


def _floor(args: argparse.Namespace) -> None:
    """The MQTT floor: a bare paho client with no network thread (it writes each PUBLISH itself),
    no journal and no service, publishing QoS 1 at the line rate on the same broker, to the same
    `mosquitto_sub`, while the service runs: what this host gives any publisher at that moment."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-floor",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", args.port)
    end = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < end:
        client.loop(0.05)
    print("ready", flush=True)
    period = 60.0 / args.rate_ppm
    pad = "x" * 1200  # about a verdict record's size
    t = time.monotonic() + period / 2
    i = 0
    while True:
        while (left := t - time.monotonic()) > 0:
            client.loop(min(left, 0.05))
        i += 1
        client.publish(FLOOR_TOPIC, json.dumps({"floor_id": i, "sent_wall_ns": time.time_ns(), "pad": pad}), qos=1)
        t += period


class Rig:
    """The test rig's own processes on this host: a mosquitto on a free loopback port, the worker
    process (the OPC UA subscriber and the PLC stand-in server; its subscriptions are timed into
    `subscribed_ns`), and `mosquitto_sub` on `topics`, its receipts (%U) in `mqtt_txt`."""

    def __init__(self, work: Path, publishing_ms: float, topics: list[str]) -> None:
        self.work = work
        self.broker = Mosquitto(work / "broker", persistence=False)
        self.broker.start()
        self.opcua_port, self.plc_port = free_port(), free_port()
        pair = make_leaf(None, "bench client", dns=["localhost"], uri="urn:edge-inspect:bench-client")
        write_keypair(pair, work / "client" / "cert.pem", work / "client" / "key.pem")
        (work / "pki" / "trusted").mkdir(parents=True, exist_ok=True)
        (work / "pki" / "trusted" / "bench-client.der").write_bytes(pair.cert_der())
        self.opcua_log = work / "opcua.jsonl"
        self.worker = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--url", f"opc.tcp://127.0.0.1:{self.opcua_port}/edge-inspect",
             "--plc-port", str(self.plc_port), "--cert", str(work / "client" / "cert.pem"), "--key",
             str(work / "client" / "key.pem"), "--out-file", str(self.opcua_log), "--publishing-ms",
             str(publishing_ms)],
            stdout=subprocess.PIPE, stderr=(work / "worker.log").open("w"), text=True)
        assert self.worker.stdout is not None and self.worker.stdout.readline().strip() == "ready"
        self.subscribed_ns: list[int] = []
        threading.Thread(target=self._read_worker, daemon=True).start()
        self.mqtt_txt = work / "mqtt.txt"
        self._mqtt_out = self.mqtt_txt.open("w")
        line_buffered = [shutil.which("stdbuf") or "stdbuf", "-oL"] if shutil.which("stdbuf") else []
        self.msub = subprocess.Popen(
            [*line_buffered, shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", "127.0.0.1", "-p",
             str(self.broker.port), "-q", "1", *[a for t in topics for a in ("-t", t)], "-F", "%U %p"],
            stdout=self._mqtt_out, stderr=subprocess.DEVNULL)

    def _read_worker(self) -> None:
        assert self.worker.stdout is not None
        for line in self.worker.stdout:
            if line.startswith("subscribed"):
                self.subscribed_ns.append(int(line.split()[1]))

    def stop(self) -> None:
        self.msub.send_signal(signal.SIGTERM)
        self.msub.wait(10)
        self._mqtt_out.close()
        self.worker.kill()
        self.worker.wait(10)
        self.broker.stop()


def _ns(t: dt.datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(round(t.timestamp() * 1e6)) * 1000


# -- the service ---------------------------------------------------------------------------------------
def make_config(work: Path, sinks: list[dict[str, Any]], rate_ppm: float, in_flight: int, engine: str,
                spin: bool | None = None, stop_spinning: bool = False) -> Any:
    camera: dict[str, Any] = {"type": "replay", "name": "line1", "path": str(DEMO_DATA / "images"),
                              "rate_ppm": rate_ppm, "loop": True}
    if in_flight:
        camera["max_in_flight"] = in_flight
    text = yaml.safe_dump({
        "version": "bench-bridge",
        "cameras": [camera],
        "engine": {"type": engine, "model": str(FRAME_MODEL), **({} if spin is None else {"allow_spinning": spin}),
                   **({"stop_spinning_after_run": True} if stop_spinning else {})},
        "pipeline": {"budget_ms": 1000, "ring_slots": 8},
        "sinks": sinks,
        "metrics": {"port": 0},
        "state_dir": str(work / "state"),
    })
    return parse_config(text, "<bench>", base_dir=work)


def plc_sinks(work: Path, mqtt_port: int, opcua_port: int, plc_port: int | None,
              opcua_process: bool = False) -> list[dict[str, Any]]:
    sinks: list[dict[str, Any]] = [
        {"type": "mqtt", "port": mqtt_port, "station": "bench", "client_id": "edge-bench"},
        {"type": "opcua-server", "port": opcua_port, "station": "bench",
         "certificate": str(work / "pki" / "server_cert.der"), "private_key": str(work / "pki" / "server_key.pem"),
         "trusted_dir": str(work / "pki" / "trusted"),
         "users": [{"name": USER, "password": PASSWORD, "role": "read-only"}], "process": opcua_process},
    ]
    if plc_port is not None:
        sinks.append({"type": "opcua-client", "url": f"opc.tcp://127.0.0.1:{plc_port}/plc",
                      "tags": {"verdict_code": "ns=2;s=DB.VerdictCode", "part_id": "ns=2;s=DB.PartId",
                               "sequence": "ns=2;s=DB.Sequence"}})
    return sinks


def run_service(cfg: Any, frames: int, ready: Any = None, peers: dict[str, int] | None = None) -> dict[str, Any]:
    """Run the service for `frames` frames (with `ready`: wait for it, the frames before count for nothing).
    `peers`: name -> pid of the test rig's other processes (broker, subscribers, PLC stand-in) on this
    host, whose CPU per frame over the run is reported: on a station they run elsewhere."""
    service = build_service(cfg, max_frames=frames)
    decided: list[tuple[str, int, int]] = []  # result id, decided wall ns, decided mono ns
    service.pipeline.subscribe(lambda v, _f: decided.append((v.result_id, v.decided_wall_ns, v.decided_ns)),
                               "bench")
    peers = peers or {}
    marks: dict[int, tuple[float, dict[str, float], dict[str, float]]] = {}
    warm = min(20, frames // 4)  # CPU over the steady part: the servers' start is paid once, not per part

    own_children: list[int] = []  # the service's own processes (the opcua-server's with process: true)

    def mark(_v: Any, _f: Any) -> None:
        if len(decided) in (warm, frames):
            own = time.process_time() + sum(process_cpu_s(pid) for pid in own_children)
            marks[len(decided)] = (own, {k: process_cpu_s(pid) for k, pid in peers.items()}, thread_cpu_ms())

    service.pipeline.subscribe(mark, "bench-cpu")
    service.start(serve_metrics=False)
    for sink in service.pipeline.sinks:
        pid = (sink.health().get("process") or {}).get("pid")
        if pid:
            own_children.append(int(pid))
    if ready is not None:
        end = time.monotonic() + 120
        while not ready() and time.monotonic() < end:
            time.sleep(0.05)
    service.pipeline.wait(1200)
    summary = service.stop()
    span = (decided[-1][2] - decided[0][2]) / 1e9 if len(decided) > 1 else float("nan")
    out = {"decided": decided, "fps": (len(decided) - 1) / span, "summary": summary}
    if warm in marks and frames in marks:
        (own0, cpu0, th0), (own1, cpu1, th1) = marks[warm], marks[frames]
        n = frames - warm
        out["cpu_ms_per_frame"] = round((own1 - own0) * 1e3 / n, 3)
        out["peers_cpu_ms_per_frame"] = {k: round((cpu1[k] - cpu0[k]) * 1e3 / n, 3) for k in peers}
        # per Python thread (ONNX Runtime's own pool threads are in the process total only)
        per_thread = {k: (v - th0.get(k, 0.0)) / n for k, v in sorted(th1.items())}
        out["thread_cpu_ms_per_frame"] = {k: round(v, 3) for k, v in per_thread.items() if v >= 0.05}
    return out


def collect_floor(mqtt_txt: Path, since_ns: int, until_ns: int) -> list[float]:
    """Receipt - send (ms) of the floor publisher's messages sent in [since_ns, until_ns]."""
    out: list[float] = []
    for line in mqtt_txt.read_text().splitlines():
        recv_s, _, payload = line.partition(" ")
        if '"floor_id"' not in payload:
            continue
        try:
            sent = int(json.loads(payload)["sent_wall_ns"])
        except (json.JSONDecodeError, KeyError, ValueError):
            continue
        if since_ns <= sent <= until_ns:
            out.append((int(round(float(recv_s) * 1e9)) - sent) / 1e6)
    return out


def collect(mqtt_txt: Path, opcua_log: Path, decided: dict[str, int]) -> tuple[list[float], ...]:
    """Receipt - decision (ms) per path for the verdicts in `decided` (result id -> decided wall ns)."""
    walls = set(decided.values())
    mqtt_ms: list[float] = []
    for line in mqtt_txt.read_text().splitlines():
        recv_s, _, payload = line.partition(" ")
        if '"floor_id"' in payload:
            continue
        try:
            doc = json.loads(payload)
        except json.JSONDecodeError:
            continue
        if doc.get("result_id") in decided:
            mqtt_ms.append((int(round(float(recv_s) * 1e9)) - decided[doc["result_id"]]) / 1e6)
    ev_ms: list[float] = []
    dc_ms: list[float] = []
    rounded = {w // 1000 * 1000 for w in walls}  # OPC UA DateTime: 100 ns resolution, read back to the us
    for line in opcua_log.read_text().splitlines():
        rec = json.loads(line)
        if rec["decided"] in rounded:
            (ev_ms if rec["kind"] == "event" else dc_ms).append((rec["recv"] - rec["decided"]) / 1e6)
    return mqtt_ms, ev_ms, dc_ms


def bridge_alone(work: Path, mqtt_port: int, opcua_port: int, n: int, rate_ppm: float, ready: Any,
                 opcua_process: bool = False) -> dict[str, int]:
    """The mqtt and opcua-server sinks fed verdicts at the line rate by this thread (no pipeline; the
    mqtt sink journals through an outbox, as in the service)."""
    from edge.ioloop import IoLoop
    from edge.registry import sink_registry
    from edge.sinks.outbox import attach_outbox
    from tests.plc.peers import make_verdict

    loop = IoLoop("bench-io")
    loop.start()
    reg = sink_registry()
    sinks = [reg.validate(c).build(work)  # type: ignore[attr-defined]
             for c in plc_sinks(work, mqtt_port, opcua_port, None, opcua_process)]
    if opcua_process:
        sinks[1].use(None)
    else:
        sinks[1].use(loop, None)
    sinks = attach_outbox(sinks, work / "state" / "journal" / "outbox-alone.sqlite")  # as in the service
    for s in sinks:
        s.start()
    end = time.monotonic() + 60
    while not ready() and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.5)
    decided: dict[str, int] = {}
    period = 60.0 / rate_ppm
    t = time.monotonic()
    for i in range(n):
        v = make_verdict(i, "REJECT" if i % 4 == 0 else "PASS", budget_ms=1000)
        for s in sinks:
            s.submit(v)
        decided[v.result_id] = v.decided_wall_ns
        t += period
        time.sleep(max(0.0, t - time.monotonic()))
    time.sleep(1.0)
    for s in sinks:
        s.close()
    loop.stop()
    return decided


def start_floor(port: int, rate_ppm: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--floor", "--port", str(port), "--rate-ppm", str(rate_ppm)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def pct(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="frames per throughput run")
    ap.add_argument("--latency-frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate-ppm", type=float, default=300.0, help="line rate of the latency run")
    ap.add_argument("--publishing-ms", type=float, default=10.0)
    ap.add_argument("--engine", default="onnxruntime")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--allow-spinning", choices=("yes", "no"), default=None,
                    help="the onnxruntime engine's allow_spinning (default: the engine's default)")
    ap.add_argument("--stop-spinning", action="store_true",
                    help="the onnxruntime engine's stop_spinning_after_run: its pool threads sleep as soon as a "
                         "run returns")
    ap.add_argument("--opcua-process", action="store_true",
                    help="the opcua-server sink with process: true (the server in a process of its own)")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="the service process's GIL switch interval (sys.setswitchinterval); default Python's 5 ms")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--plc-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--out-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        asyncio.run(_worker(args))
        return 0
    if args.floor:
        _floor(args)
        return 0

    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    spin = None if args.allow_spinning is None else args.allow_spinning == "yes"
    rig = Rig(Path(tempfile.mkdtemp(prefix="bench-bridge-")), args.publishing_ms,
              ["edge-inspect/bench/verdict", FLOOR_TOPIC])
    work, broker, opcua_port, plc_port = rig.work, rig.broker, rig.opcua_port, rig.plc_port
    opcua_log, subscribed_ns = rig.opcua_log, rig.subscribed_ns
    result: dict[str, Any] = {
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()},
        "settings": {k: getattr(args, k) for k in ("frames", "latency_frames", "rounds", "rate_ppm",
                                                   "publishing_ms", "engine", "allow_spinning",
                                                   "switch_interval_ms", "opcua_process", "stop_spinning")},
    }
    try:
        # latency, paced at the line rate, the mqtt + opcua-server sinks on
        cfg = make_config(work, plc_sinks(work, broker.port, opcua_port, None, args.opcua_process), args.rate_ppm, 0,
                          args.engine, spin, args.stop_spinning)
        floor = start_floor(broker.port, args.rate_ppm)
        try:
            lat = run_service(cfg, args.latency_frames, lambda: bool(subscribed_ns))
            time.sleep(1.0)
        finally:
            floor.kill()
            floor.wait(10)
        # measured: verdicts decided once the OPC UA subscriber had subscribed (all paths alike)
        since = subscribed_ns[0] + 500_000_000 if subscribed_ns else 0
        decided = {rid: wall for rid, wall, _ in lat["decided"] if wall >= since}
        mqtt_ms, ev_ms, dc_ms = collect(work / "mqtt.txt", opcua_log, decided)
        floor_ms = collect_floor(work / "mqtt.txt", min(decided.values()), max(decided.values()))
        result["latency_ms"] = {"mqtt_qos1": pct(mqtt_ms), "opcua_event": pct(ev_ms), "opcua_datachange": pct(dc_ms),
                                "mqtt_floor": pct(floor_ms)}
        result["latency_run"] = {"frames": len(lat["decided"]), "fps": round(lat["fps"], 2),
                                 "verdicts": lat["summary"].get("verdicts"),
                                 "sinks": [{k: h.get(k) for k in ("name", "written", "dropped", "errors")}
                                           for h in lat["summary"].get("sinks", [])]}
        print("latency:", json.dumps(result["latency_ms"]), flush=True)
        # the bridge alone: the same sinks and subscribers, verdicts at the same rate, no inference
        n_sub = len(subscribed_ns)
        floor = start_floor(broker.port, args.rate_ppm)
        try:
            alone = bridge_alone(work, broker.port, opcua_port, args.latency_frames, args.rate_ppm,
                                 lambda: len(subscribed_ns) > n_sub, args.opcua_process)
        finally:
            floor.kill()
            floor.wait(10)
        Path(str(opcua_log) + ".pause").touch()
        time.sleep(1.0)
        a_mqtt, a_ev, a_dc = collect(work / "mqtt.txt", opcua_log, alone)
        a_floor = collect_floor(work / "mqtt.txt", min(alone.values()), max(alone.values()))
        result["latency_ms_bridge_alone"] = {"mqtt_qos1": pct(a_mqtt), "opcua_event": pct(a_ev),
                                             "opcua_datachange": pct(a_dc), "mqtt_floor": pct(a_floor)}
        print("latency, bridge alone:", json.dumps(result["latency_ms_bridge_alone"]), flush=True)
        # throughput, interleaved: none / all three
        rounds = []
        # the rig's own processes: on a station the PLC and the subscribers are other machines
        peers = {"broker": broker.proc.pid if broker.proc else 0, "plc_and_opcua_subscriber": rig.worker.pid,
                 "mosquitto_sub": rig.msub.pid}
        for r in range(args.rounds):
            order = ["none", "all"] if r % 2 == 0 else ["all", "none"]
            row: dict[str, Any] = {}
            for which in order:
                sinks = [] if which == "none" else plc_sinks(work, broker.port, opcua_port, plc_port,
                                                             args.opcua_process)
                run = run_service(make_config(work, sinks, 0, 2, args.engine, spin, args.stop_spinning), args.frames,
                                  peers=peers)
                row[which] = round(run["fps"], 3)
                row[f"cpu_ms_per_frame_{which}"] = run.get("cpu_ms_per_frame")
                row[f"peers_cpu_ms_per_frame_{which}"] = run.get("peers_cpu_ms_per_frame")
                row[f"thread_cpu_ms_per_frame_{which}"] = run.get("thread_cpu_ms_per_frame")
            row["ratio"] = round(row["all"] / row["none"], 4)
            rounds.append(row)
            print(f"round {r + 1}: {row}", flush=True)
        result["throughput"] = {"rounds": rounds,
                                "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 4),
                                "fps_none_median": round(statistics.median(r["none"] for r in rounds), 3),
                                "fps_all_median": round(statistics.median(r["all"] for r in rounds), 3),
                                "peers_cpu_ms_per_frame_all_median": {
                                    k: round(statistics.median(r["peers_cpu_ms_per_frame_all"][k] for r in rounds), 3)
                                    for k in peers},
                                "service_cpu_ms_per_frame_ratio_median": round(statistics.median(
                                    r["cpu_ms_per_frame_all"] / r["cpu_ms_per_frame_none"] for r in rounds), 4)}
    finally:
        rig.stop()
    lm = result["latency_ms"]
    targets = {
        "mqtt_p99_le_5ms": lm["mqtt_qos1"].get("p99", 1e9) <= 5.0,
        "opcua_event_p99_le_15ms": lm["opcua_event"].get("p99", 1e9) <= 15.0,
        "opcua_datachange_p99_le_15ms": lm["opcua_datachange"].get("p99", 1e9) <= 15.0,
        "throughput_ge_0_97x": result["throughput"]["ratio_median"] >= 0.97,
    }
    result["targets_met"] = targets
    # the same run's floor: what a bare publisher got from this host and broker at the same time
    fl = lm["mqtt_floor"]
    result["mqtt_over_floor_ms"] = {k: round(lm["mqtt_qos1"][k] - fl[k], 3) for k in ("p50", "p99") if k in fl}
    result["floor_meets_mqtt_target"] = fl.get("p99", 1e9) <= 5.0
    result["host"]["load_avg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bridge-opcua-process" if args.opcua_process else "bridge"
    stem += "-stop-spinning" if args.stop_spinning else ""
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, {"with pipeline": [mqtt_ms, ev_ms, dc_ms, floor_ms], "bridge alone": [a_mqtt, a_ev, a_dc, a_floor]},
         args.out / f"{stem}.png")
    print(json.dumps({"latency_ms": lm, "throughput_ratio_median": result["throughput"]["ratio_median"],
                      "peers_cpu_ms_per_frame": result["throughput"]["peers_cpu_ms_per_frame_all_median"],
                      "mqtt_over_floor_ms": result["mqtt_over_floor_ms"], "targets_met": targets}))
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("kept", work)
    return 0


def plot(result: dict[str, Any], runs: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 4.5))
    labels = ["MQTT QoS1", "OPC UA event", "OPC UA data change", "MQTT floor\n(bare client)"]
    pos = 1
    ticks, names = [], []
    for run, colour in (("with pipeline", "tab:blue"), ("bridge alone", "tab:green")):
        data = [d if d else [float("nan")] for d in runs[run]]
        where = [pos + i for i in range(len(data))]
        bp = a.boxplot(data, positions=where, whis=(1, 99), showfliers=False, patch_artist=True)
        for i, box in enumerate(bp["boxes"]):
            box.set_facecolor("tab:grey" if i == 3 else colour)
            box.set_alpha(0.4)
        ticks += where
        names += [f"{n}\n({run})" for n in labels]
        pos += len(data) + 1
    a.set_xticks(ticks, names, fontsize=7)
    a.axhline(5, color="tab:red", ls="--", lw=1, label="MQTT target p99 5 ms")
    a.axhline(15, color="tab:orange", ls="--", lw=1, label="OPC UA target p99 15 ms")
    a.set_ylabel("decision -> independent subscriber (ms), whiskers p1/p99")
    a.legend(fontsize=8)
    rounds = result["throughput"]["rounds"]
    xs = range(1, len(rounds) + 1)
    b.plot(xs, [r["none"] for r in rounds], "o-", label="no sinks")
    b.plot(xs, [r["all"] for r in rounds], "s-", label="mqtt + opcua-server + opcua-client")
    b.set_xlabel("round")
    b.set_ylabel("frames/s (saturated)")
    b.set_title(f"throughput ratio median {result['throughput']['ratio_median']:.3f}")
    b.legend(fontsize=8)
    load = result["host"].get("load_avg_start", [0])[0]
    fig.suptitle(f"PLC bridge, {result['host'].get('cpus')} CPUs, load average at start {load:.1f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
