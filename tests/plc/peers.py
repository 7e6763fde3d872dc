"""Real peers on loopback for the PLC-bridge tests: a mosquitto broker, an independent subscriber, verdicts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from plc.certs import KeyPair, make_ca, make_leaf, write_keypair

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def journal_ids(path: Path) -> set[str]:
    """The result ids waiting in a durable sink's own journal file (read while the sink runs)."""
    with closing(sqlite3.connect(path)) as db:
        return {r for (r,) in db.execute("SELECT result_id FROM entries")}


def journaled_while_waiting(sink: Any, verdicts: list[Any], on_disk: Callable[[], set[str]]) -> float:
    """Submit `verdicts` while the sink's writer waits in a delivery; seconds until all are on disk
    (fails if that takes over 5 s: a crash meanwhile would lose them)."""
    for v in verdicts:
        assert sink.submit(v)
    t0 = time.monotonic()
    assert wait_until(lambda: {v.result_id for v in verdicts} <= on_disk(), 5), "not journaled during the wait"
    return time.monotonic() - t0


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    ca_pair: KeyPair


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    leaf = make_leaf(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"])
    (folder / "ca.pem").write_bytes(ca.cert_pem())
    write_keypair(leaf, folder / "broker.pem", folder / "broker.key")
    return TlsFiles(folder / "ca.pem", folder / "broker.pem", folder / "broker.key", ca)


class Mosquitto:
    """A mosquitto process on a free loopback port, with a generated config; restartable on the same port."""

    def __init__(
        self,
        folder: Path,
        users: dict[str, str] | None = None,
        tls: TlsFiles | None = None,
        persistence: bool = True,
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}"]
        if os.geteuid() == 0:  # as root mosquitto drops to user "mosquitto", who cannot read pytest's tmp dirs
            lines.append("user root")
        if users:
            pw = folder / "passwd"
            pw.touch()
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        if tls:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}", "tls_version tlsv1.2"]
        if persistence:
            lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 1"]
        lines += ["max_queued_messages 100000", f"log_dest file {folder}/mosquitto.log", "log_type all"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(listening, timeout, 0.05):
            raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: saves its persistence file (queued QoS 1 messages, sessions)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def log_tail(self, n: int = 40) -> str:
        p = self.folder / "mosquitto.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, Any]
    wall_ns: int

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """An independent paho client with a persistent session (it gets what was published while it was away)."""

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    client_id: str = "test-subscriber"
    resume: bool = False  # continue the broker-side session of an earlier subscriber with this client id
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.ca_file:
            c.tls_set(ca_certs=str(self.ca_file))
        # back well before the service's link (which waits at least 1 s): after a broker restart that
        # dropped this MQTT 5 session, what is published before it subscribes again never reaches it
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # paho takes float seconds too
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_disconnect = lambda *a: self._subscribed.clear()
        self.client = c

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if msg.properties is not None:
            for name in ("MessageExpiryInterval", "UserProperty", "ContentType"):
                if hasattr(msg.properties, name):
                    props[name] = getattr(msg.properties, name)
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain), props, time.time_ns()))

    def start(self, timeout: float = 10.0) -> Subscriber:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        clean = False if self.resume else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect(self.host, self.port, keepalive=10, clean_start=clean, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(timeout), "subscriber did not subscribe"
        return self

    def wait_subscribed(self, timeout: float = 15.0) -> bool:
        """Connected and subscribed again (after the broker restarted): what is published from now on
        reaches it even where the broker did not keep its session (mosquitto 2.0.11 answered this
        subscriber's reconnect after a restart with session-present 0: messages published before it
        resubscribed were not kept for it)."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def ids(self, suffix: str) -> list[str]:
        return [m.json()["result_id"] for m in self.on(suffix) if m.payload.startswith(b"{")]


def make_verdict(
    i: int,
    kind: str = "PASS",
    budget_ms: float = 250.0,
    decided_after_ms: float = 20.0,
    camera: str = "line1",
) -> Any:
    """A verdict as the pipeline makes it (fresh: decided now, deadline `budget_ms` after capture)."""
    from edge.verdict import Detection, FailsafeReason, Reason, Verdict, VerdictKind, new_result_id

    now_mono = time.monotonic_ns()
    captured = now_mono - int(decided_after_ms * 1e6)
    det = Detection(1, "short", 0.91, (10.0, 20.0, 30.0, 40.0))
    reasons: tuple[Reason, ...] = ()
    dets: tuple[Detection, ...] = ()
    fs = None
    if kind == "REJECT":
        reasons, dets = (Reason("min_confidence", "short 0.91 >= 0.25", det),), (det,)
    elif kind == "FAILSAFE":
        fs = FailsafeReason.DEADLINE
        reasons = (Reason("failsafe", "not decided by its deadline"),)
    return Verdict(
        result_id=new_result_id(),
        part_id=f"part-{i:05d}",
        frame_id=i,
        camera=camera,
        verdict=VerdictKind(kind),
        reasons=reasons,
        detections=dets,
        captured_ns=captured,
        arrived_ns=captured + 1_000_000,
        decided_ns=now_mono,
        deadline_ns=captured + int(budget_ms * 1e6),
        decided_wall_ns=time.time_ns(),
        latencies_ms={"total": decided_after_ms},
        model_id="m1",
        config_version="test",
        failsafe_reason=fs,
    )


@dataclass
class ClientPki:
    cert: Path  # PEM
    key: Path
    uri: str


def make_client_pki(folder: Path, trusted_dir: Path | None, uri: str = "urn:edge-inspect:test-client") -> ClientPki:
    """A client application certificate; copied into the server's trust list when `trusted_dir` is given."""
    pair = make_leaf(None, "test-client", dns=["localhost"], ips=["127.0.0.1"], uri=uri)
    folder.mkdir(parents=True, exist_ok=True)
    write_keypair(pair, folder / "client_cert.pem", folder / "client_key.pem")
    if trusted_dir is not None:
        trusted_dir.mkdir(parents=True, exist_ok=True)
        (trusted_dir / "client_cert.der").write_bytes(pair.cert_der())
    return ClientPki(folder / "client_cert.pem", folder / "client_key.pem", uri)


class RecordingControl:
    """The subset of `edge.control.ServiceControl` the OPC UA server drives, recording each change.

    Stands in for the pipeline's mode only in the server's own tests; the service test runs the real one.
    """

    def __init__(self, recipes: tuple[str, ...] = ("default", "boards-v2")) -> None:
        self._mode = "running"
        self._recipes = list(recipes)
        self._active = recipes[0]
        self.calls: list[tuple[str, str]] = []

    def mode(self) -> str:
        return self._mode

    def halt(self, who: str = "system") -> None:
        self._mode = "halted"
        self.calls.append(("halt", who))

    def resume(self, who: str = "system") -> None:
        self._mode = "running"
        self.calls.append(("resume", who))

    def single(self, n: int = 1, who: str = "system") -> None:
        self._mode = "single"
        self.calls.append((f"single:{n}", who))

    def recipes(self) -> list[str]:
        return list(self._recipes)

    def active_recipe(self) -> str:
        return self._active

    def activate_recipe(self, name: str, who: str = "system") -> str:
        self._active = name
        self.calls.append((f"recipe:{name}", who))
        return name
