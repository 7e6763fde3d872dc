"""Client mode against a small asyncua server standing in for the PLC (its tags and its handshake:
it copies each new sequence into the ack tag), restarted mid-stream. Every current verdict is
written and acknowledged, no stale one is ever written into the tags."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

from edge.ioloop import IoLoop
from edge.registry import sink_registry
from plc.certs import make_leaf, write_keypair
from plc.opcua_client import OpcUaClientSink, OpcUaClientSinkConfig
from tests.plc.peers import (
    free_port,
    journal_ids,
    journaled_while_waiting,
    make_client_pki,
    make_verdict,
    wait_until,
)

TAGS = {
    "VerdictCode": (ua.VariantType.Int16, 0),
    "PartId": (ua.VariantType.String, ""),
    "ResultId": (ua.VariantType.String, ""),
    "Deadline": (ua.VariantType.DateTime, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)),
    "Sequence": (ua.VariantType.UInt32, 0),
    "Ack": (ua.VariantType.UInt32, 0),
    "StaleCount": (ua.VariantType.UInt32, 0),
}
# the client-mode tags with the PLC's ack handshake
ACK_TAGS = {"verdict_code": "ns=2;s=DB_Vision.VerdictCode", "sequence": "ns=2;s=DB_Vision.Sequence",
            "result_id": "ns=2;s=DB_Vision.ResultId", "ack": "ns=2;s=DB_Vision.Ack"}


class PlcStandIn:
    """An asyncua server with a DB of tags; on every new Sequence it records the verdict and acks it.

    Its tag values survive a restart (like a PLC's retained data block)."""

    def __init__(self, port: int, pki: Path | None = None) -> None:
        self.port = port
        self.pki = pki  # with a folder: Basic256Sha256 SignAndEncrypt and a username/password login only
        self.loop = IoLoop("plc-standin")
        self.received: list[dict[str, Any]] = []
        self.values: dict[str, Any] = {k: v for k, (_, v) in TAGS.items()}
        self.lock = threading.Lock()
        self.server: Server | None = None
        self.hold_acks = False  # True: record new sequences, ack none (a PLC busy elsewhere)

    def start(self) -> None:
        self.loop.start()
        self.loop.run_sync(self._start(), 60)

    def stop(self) -> None:
        self.loop.run_sync(self._stop(), 30)
        self.loop.stop()

    async def _start(self) -> None:
        server = Server(user_manager=_PlcUsers() if self.pki else None)
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/plc")
        if self.pki is not None:
            pair = make_leaf(None, "plc", dns=["localhost"], ips=["127.0.0.1"], uri="urn:test:plc-app")
            write_keypair(pair, self.pki / "plc_cert.der", self.pki / "plc_key.pem")
            await server.set_application_uri("urn:test:plc-app")
            await server.load_certificate(str(self.pki / "plc_cert.der"))
            await server.load_private_key(str(self.pki / "plc_key.pem"))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:test:plc")
        db = await server.nodes.objects.add_object(ua.NodeId("DB_Vision", ns), "DB_Vision")
        self.nodes = {}
        for name, (vtype, _) in TAGS.items():
            node = await db.add_variable(ua.NodeId(f"DB_Vision.{name}", ns), name, ua.Variant(self.values[name], vtype))
            await node.set_writable()
            self.nodes[name] = node
        await server.start()
        self.server = server
        sub = await server.create_subscription(1, self)
        await sub.subscribe_data_change(self.nodes["Sequence"])

    async def _stop(self) -> None:
        assert self.server is not None
        for name, node in self.nodes.items():
            self.values[name] = await node.read_value()
        await self.server.stop()
        self.server = None

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        if not val or self.server is None or val == self.values.get("Sequence"):
            return  # (the subscription's first notification repeats the retained value)
        self.values["Sequence"] = val
        srv = self.server
        read = {n: srv.read_attribute_value(self.nodes[n].nodeid).Value.Value for n in ("VerdictCode", "ResultId")}
        with self.lock:
            self.received.append({"sequence": val, **read})
        if not self.hold_acks:
            asyncio.get_running_loop().create_task(self.ack(val))

    async def ack(self, seq: int) -> None:
        await self.nodes["Ack"].write_value(ua.Variant(seq, ua.VariantType.UInt32))

    def ids(self) -> list[str]:
        with self.lock:
            return [r["ResultId"] for r in self.received]


class _PlcUsers:
    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        return User(role=UserRole.User, name=username) if (username, password) == ("vision", "v-pw") else None


def test_client_mode_over_signandencrypt_with_a_user(tmp_path: Path) -> None:
    port = free_port()
    plc = PlcStandIn(port, pki=tmp_path / "plc")
    (tmp_path / "plc").mkdir()
    plc.start()
    pki = make_client_pki(tmp_path / "client", None, uri="urn:edge-inspect:plc-client")
    loop = IoLoop("service-io")
    loop.start()
    base = {
        "type": "opcua-client",
        "url": f"opc.tcp://127.0.0.1:{port}/plc",
        "tags": ACK_TAGS,
        "security": {"mode": "SignAndEncrypt", "certificate": str(pki.cert), "private_key": str(pki.key)},
        "username": "vision",
        "connect_timeout_s": 5.0,
    }
    try:
        wrong = OpcUaClientSinkConfig.model_validate(
            {**base, "password": "nope", "journal": {"path": str(tmp_path / "j1.sqlite")}}).build(tmp_path)
        wrong.ioloop = loop
        wrong.start()
        v0 = make_verdict(0, "REJECT", budget_ms=30_000)
        wrong.submit(v0)
        assert wait_until(lambda: wrong.health()["errors"] >= 1, 30)
        assert wrong.health()["written"] == 0 and plc.ids() == []  # refused login: nothing written
        wrong.close(timeout=1)
        sink = OpcUaClientSinkConfig.model_validate(
            {**base, "password": "v-pw", "journal": {"path": str(tmp_path / "j2.sqlite")}}).build(tmp_path)
        sink.ioloop = loop
        sink.start()
        vs = [make_verdict(i, "PASS", budget_ms=30_000) for i in range(1, 6)]
        for v in vs:
            sink.submit(v)
        assert wait_until(lambda: plc.ids() == [v.result_id for v in vs], 60), (plc.ids(), sink.health()["last_error"])
        # the last ack is read back just after the last write: wait for it rather than race it
        assert wait_until(lambda: sink.health()["acked"] == 5, 30), sink.health()
        sink.close(timeout=5)
    finally:
        loop.stop()
        plc.stop()


def test_client_mode_writes_every_current_verdict_through_a_plc_restart(tmp_path: Path) -> None:
    port = free_port()
    plc = PlcStandIn(port)
    plc.start()
    loop = IoLoop("service-io")
    loop.start()
    tags = {k: f"ns=2;s=DB_Vision.{v}" for k, v in (
        ("verdict_code", "VerdictCode"), ("part_id", "PartId"), ("result_id", "ResultId"), ("deadline", "Deadline"),
        ("sequence", "Sequence"), ("ack", "Ack"), ("stale_count", "StaleCount"))}
    cfg = {
        "type": "opcua-client",
        "url": f"opc.tcp://127.0.0.1:{port}/plc",
        "tags": tags,
        "ack_timeout_s": 2.0,
        "connect_timeout_s": 2.0,
        "journal": {"path": str(tmp_path / "journal.sqlite"), "retry_initial_s": 0.1, "retry_max_s": 0.5},
    }
    model = sink_registry().model("opcua-client")
    assert model is OpcUaClientSinkConfig
    sink = model.model_validate(cfg).build(tmp_path)  # type: ignore[attr-defined]
    assert isinstance(sink, OpcUaClientSink)
    sink.ioloop = loop  # what bind(ctx) does in the service
    sink.start()
    current: list[str] = []
    stale: list[str] = []
    try:
        for i in range(30):
            v = make_verdict(i, "REJECT" if i % 3 == 0 else "PASS", budget_ms=30_000)
            sink.submit(v)
            current.append(v.result_id)
            time.sleep(0.02)
        late = make_verdict(30, "REJECT", decided_after_ms=300.0)  # decided after its deadline
        sink.submit(late)
        stale.append(late.result_id)
        assert wait_until(lambda: len(plc.ids()) == 30, 60), (len(plc.ids()), sink.health())
        plc.stop()  # the PLC restarts mid-stream
        for i in range(31, 51):
            v = make_verdict(i, "PASS", budget_ms=30_000)
            sink.submit(v)
            current.append(v.result_id)
        for i in range(51, 56):  # these parts pass the ejector while the PLC is away
            v = make_verdict(i, "REJECT", budget_ms=300)
            sink.submit(v)
            stale.append(v.result_id)
        assert wait_until(lambda: not sink.health()["live"], 20)
        time.sleep(1.0)
        plc.loop = IoLoop("plc-standin-2")  # the same stand-in: its tag values are retained
        plc.start()
        assert wait_until(lambda: set(current) <= set(plc.ids()), 60), (len(plc.ids()), sink.health())
        assert wait_until(lambda: sink.health()["backlog"] == 0, 30)
    finally:
        sink.close(timeout=10)
        loop.stop()
    got = plc.ids()
    seqs = [r["sequence"] for r in plc.received]
    h = sink.health()
    plc.stop()
    stale_tag = plc.values["StaleCount"]
    print(
        f"PLC restart: injected {len(current)} current + {len(stale)} stale, PLC received {len(got)} writes "
        f"({len(set(got) & set(current))} distinct current), stale written {len(set(got) & set(stale))}, "
        f"stale skipped {h['stale_skipped']} (tag {stale_tag}), acked {h['acked']}, ack timeouts {h['ack_timeouts']}"
    )
    assert set(current) <= set(got), "lost"
    assert not set(got) & set(stale), "a stale verdict was written into the PLC's tags"
    assert h["stale_skipped"] == len(stale) and stale_tag == len(stale)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # a new sequence for every write, never repeated
    codes = {r["ResultId"]: r["VerdictCode"] for r in plc.received}
    assert codes[current[0]] == 2 and codes[current[1]] == 1


def test_verdicts_are_journaled_while_the_plc_holds_its_ack(tmp_path: Path) -> None:
    """A PLC that takes its time to ack holds the writer in a delivery for up to `ack_timeout_s`;
    what is submitted meanwhile is on disk within a wait slice (a crash then would lose none of it),
    and it is all written once the PLC acks."""
    def on_disk() -> set[str]:
        return journal_ids(tmp_path / "journal.sqlite")

    port = free_port()
    plc = PlcStandIn(port)
    plc.start()
    plc.hold_acks = True
    loop = IoLoop("service-io")
    loop.start()
    cfg = {
        "type": "opcua-client",
        "url": f"opc.tcp://127.0.0.1:{port}/plc",
        "tags": ACK_TAGS,
        "ack_timeout_s": 30.0,
        "connect_timeout_s": 5.0,
        "journal": {"path": str(tmp_path / "journal.sqlite")},
    }
    sink = OpcUaClientSinkConfig.model_validate(cfg).build(tmp_path)
    sink.ioloop = loop
    sink.start()
    try:
        first = make_verdict(0, budget_ms=60_000)
        sink.submit(first)
        assert wait_until(lambda: plc.ids() == [first.result_id], 30), sink.health()
        later = [make_verdict(i, budget_ms=60_000) for i in range(1, 11)]
        journaled_s = journaled_while_waiting(sink, later, on_disk)
        assert plc.ids() == [first.result_id]  # the writer still waits for the first ack
        plc.hold_acks = False
        plc.loop.run_sync(plc.ack(plc.received[-1]["sequence"]), 10)
        every = [first.result_id] + [v.result_id for v in later]
        assert wait_until(lambda: plc.ids() == every, 60), (plc.ids(), sink.health())
        assert wait_until(lambda: not on_disk(), 10)
        print(f"PLC holding its ack: 10 verdicts journaled {journaled_s * 1e3:.0f} ms after submit while a delivery "
              f"waited; {len(plc.ids())} of 11 written in order after the ack")
    finally:
        sink.close(timeout=10)
        loop.stop()
        plc.stop()
