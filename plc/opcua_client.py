"""Sink type ``opcua-client``: each verdict written into tags of the PLC's own OPC UA server.

The way most lines integrate vision: the PLC program watches a sequence tag; when it changes,
the verdict code and part id tags beside it belong to that new verdict. One Write request per
verdict writes part id, verdict code (and the optional result id / deadline / margin tags) and
the sequence last. With an ``ack`` tag the sink then waits until the PLC echoes the sequence
into it (within ``ack_timeout_s``) before the verdict counts as delivered.

Durable (`edge.sinks.durable`): verdicts wait in the journal while the PLC is unreachable; the
link reconnects with back-off. A verdict that is stale by the time it could be written (decided
late, past its deadline, or replayed from an earlier run) is never written into the tags: it is
acknowledged in the journal, counted (``stale_skipped``) and logged, and the optional
``stale_count`` tag is incremented, so that the PLC applies its own fail-safe to that part.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import SinkError, TransientSinkError
from edge.ioloop import IoLoop
from edge.sinks.durable import DurableSink, DurableSinkConfigBase
from edge.sinks.journal import JournalEntry
from plc.machine_vision.result_model import VERDICT_CODES
from plc.mqtt_link import age_s, read_password, wait_in_slices
from plc.stale import classify

if TYPE_CHECKING:
    from edge.control import ServiceContext

log = logging.getLogger(__name__)


class PlcTags(BaseModel):
    """NodeIds of the PLC's tags (strings such as ``ns=3;s="DB_Vision"."Verdict"`` or ``nsu=<uri>;s=...``)."""

    model_config = ConfigDict(extra="forbid")

    verdict_code: str = Field(..., description="Int: 1 PASS, 2 REJECT, 3 FAILSAFE.")
    part_id: str | None = Field(None, description="String: the part id.")
    sequence: str = Field(..., description="Unsigned int: +1 per verdict, written last.")
    result_id: str | None = Field(None, description="String: the verdict's result id.")
    deadline: str | None = Field(None, description="DateTime: the part's deadline (wall clock, UTC).")
    margin_ms: str | None = Field(None, description="Real: deadline - decision, ms.")
    ack: str | None = Field(None, description="Unsigned int the PLC copies the sequence into (handshake).")
    stale_count: str | None = Field(None, description="Unsigned int: stale verdicts not written (+1 each).")


class OpcUaClientSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: str = Field(..., description="This client's application certificate (PEM or DER).")
    private_key: str = Field(..., description="Its private key (PEM).")
    server_certificate: str | None = Field(None, description="The PLC's certificate (pins it when given).")


class OpcUaClientSinkConfig(DurableSinkConfigBase):
    type: Literal["opcua-client"] = "opcua-client"
    url: str = Field(..., description="The PLC's endpoint, opc.tcp://host:port[/path].")
    tags: PlcTags
    ack_timeout_s: float = Field(1.0, gt=0, description="Longest wait for the PLC's ack of one verdict.")
    application_uri: str = Field("urn:edge-inspect:plc-client", description="Must match the certificate's URI.")
    security: OpcUaClientSecurity | None = Field(None, description="Basic256Sha256 (None: no security).")
    username: str | None = None
    password_env: str | None = None
    password: str | None = None
    connect_timeout_s: float = Field(5.0, gt=0)

    def build(self, base_dir: Path) -> OpcUaClientSink:
        return OpcUaClientSink(self.name or "opcua-client", self, base_dir)


_FIELDS = ("part_id", "result_id", "deadline", "margin_ms", "verdict_code")  # written in this order, sequence last


class OpcUaClientSink(DurableSink):
    def __init__(self, name: str, cfg: OpcUaClientSinkConfig, base_dir: Path) -> None:
        super().__init__(name, cfg.journal, cfg.journal_path(base_dir), cfg.queue_size)
        self.ocfg = cfg
        self.base_dir = base_dir
        self.password = read_password(cfg.password, cfg.password_env, f"opcua-client sink {name}")
        self.ioloop: IoLoop | None = None
        self._own_loop: IoLoop | None = None
        self._client: Client | None = None
        self._nodes: dict[str, tuple[Node, ua.VariantType]] = {}
        self.sequence = 0
        self.stale_skipped = 0
        self.acked = 0
        self.ack_timeouts = 0
        self.connects = 0
        self.last_ack_ms: float | None = None
        self.last_ack_wall_ns: int | None = None

    def bind(self, ctx: ServiceContext) -> None:
        super().bind(ctx)
        self.ioloop = ctx.ioloop

    def _path(self, p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else self.base_dir / path)

    # -- DurableSink hooks (writer thread) ---------------------------------------------------------
    def open(self) -> None:
        if self.ioloop is None:
            self._own_loop = IoLoop(f"opcua-client-{self.name}")
            self._own_loop.start()
            self.ioloop = self._own_loop
        try:
            self._on_loop(self._connect(), self.ocfg.connect_timeout_s + 10)
        except TransientSinkError as exc:
            log.warning("opcua-client %s: PLC %s not reachable yet (%s); verdicts wait in the journal",
                        self.name, self.ocfg.url, exc)

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        return self._on_loop(self._deliver(entries), self.ocfg.ack_timeout_s * len(entries) + 30)

    def shutdown(self) -> None:
        try:
            self._on_loop(self._disconnect(), 10)
        except Exception:
            pass
        if self._own_loop is not None:
            self._own_loop.stop()
            self._own_loop = None

    def extra_health(self) -> dict[str, Any]:
        return {
            "connected": self._client is not None,
            "connects": self.connects,
            "sequence": self.sequence,
            "acked": self.acked,
            "ack_timeouts": self.ack_timeouts,
            "stale_skipped": self.stale_skipped,
            "last_ack_ms": self.last_ack_ms,
            "last_ack_age_s": age_s(self.last_ack_wall_ns),
        }

    def _on_loop(self, coro: Any, timeout: float) -> Any:
        """Run a coroutine on the I/O loop from the writer thread; a lost PLC becomes TransientSinkError."""
        assert self.ioloop is not None
        try:
            future = self.ioloop.run(coro)
        except Exception as exc:  # the I/O loop is gone (the service stopping)
            coro.close()
            raise TransientSinkError(f"PLC {self.ocfg.url}: no I/O loop ({exc})") from exc
        try:  # in slices: what is submitted while the PLC is slow to answer (connect, ack) goes to the journal
            if not wait_in_slices(lambda t: wait_futures([future], timeout=t)[0], timeout, self.journal_waiting):
                raise TimeoutError(f"no answer within {timeout:g} s")
            return future.result(0)
        except (SinkError, TransientSinkError):
            raise
        except Exception as exc:  # timeout, connection lost, a Bad status from the PLC's stack
            future.cancel()
            self.ioloop.run(self._disconnect())
            raise TransientSinkError(f"PLC {self.ocfg.url}: {type(exc).__name__}: {exc}") from exc

    # -- on the I/O loop ---------------------------------------------------------------------------
    async def _connect(self) -> None:
        if self._client is not None:
            return
        cfg = self.ocfg
        client = Client(cfg.url, timeout=cfg.connect_timeout_s)
        client.application_uri = cfg.application_uri
        if cfg.security is not None:
            mode = getattr(ua.MessageSecurityMode, cfg.security.mode)
            server_cert = self._path(cfg.security.server_certificate) if cfg.security.server_certificate else None
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                self._path(cfg.security.certificate),
                self._path(cfg.security.private_key),
                server_certificate=server_cert,
                mode=mode,
            )
        if cfg.username:
            client.set_user(cfg.username)
            client.set_password(self.password or "")
        try:
            await asyncio.wait_for(client.connect(), cfg.connect_timeout_s)
        except Exception as exc:
            try:
                await client.disconnect()
            except Exception:
                pass
            raise TransientSinkError(f"PLC {cfg.url}: cannot connect ({type(exc).__name__}: {exc})") from exc
        try:
            nodes: dict[str, tuple[Node, ua.VariantType]] = {}
            for key, nodeid in cfg.tags.model_dump().items():
                if nodeid:
                    node = client.get_node(nodeid)
                    nodes[key] = (node, await node.read_data_type_as_variant_type())
            seq_node = nodes["sequence"][0]
            current = await seq_node.read_value()
        except ua.UaStatusCodeError as exc:
            await client.disconnect()
            raise SinkError(f"opcua-client {self.name}: a configured tag is unusable ({exc})") from exc
        self._nodes = nodes
        # continue from what the PLC holds: a restart must never repeat the sequence it last saw
        self.sequence = max(self.sequence, int(current or 0))
        self._client = client
        self.connects += 1
        log.info("opcua-client %s: connected to %s (sequence %d)", self.name, cfg.url, self.sequence)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:
                pass

    def _variant(self, key: str, value: Any) -> ua.DataValue:
        vtype = self._nodes[key][1]
        if vtype in (ua.VariantType.Float, ua.VariantType.Double):
            value = float(value)
        elif vtype == ua.VariantType.String:
            value = str(value)
        elif vtype == ua.VariantType.DateTime:
            value = dt.datetime.fromtimestamp(value / 1e9, tz=dt.timezone.utc)
        elif vtype not in (ua.VariantType.Boolean,):
            value = int(value)
        return ua.DataValue(ua.Variant(value, vtype))

    async def _deliver(self, entries: list[JournalEntry]) -> int:
        """Write the entries in order; the number done (a failure after the first is retried next time)."""
        await self._connect()
        client = self._client
        assert client is not None
        for done, entry in enumerate(entries):
            try:
                await self._deliver_one(client, entry)
            except Exception:
                if done == 0:
                    raise
                await self._disconnect()
                return done
        return len(entries)

    async def _deliver_one(self, client: Client, entry: JournalEntry) -> None:
        d = classify(entry.payload, time.time_ns(), replayed=entry.replayed, attempts=entry.attempts)
        if d.stale:
            await self._skip_stale(client, entry, d.to_dict())
            return
        rec = entry.payload
        seq = (self.sequence + 1) & 0xFFFFFFFF or 1
        values = {
            "part_id": rec.get("part_id", ""),
            "result_id": rec.get("result_id", ""),
            "deadline": d.deadline_wall_ns,
            "margin_ms": d.margin_ms,
            "verdict_code": VERDICT_CODES.get(str(rec.get("verdict")), 3),
            "sequence": seq,
        }
        keys = [k for k in (*_FIELDS, "sequence") if k in self._nodes]
        results = await client.uaclient.write_attributes(
            [self._nodes[k][0].nodeid for k in keys],
            [self._variant(k, values[k]) for k in keys],
            ua.AttributeIds.Value,
        )
        bad = [f"{k}: {r.name}" for k, r in zip(keys, results, strict=True) if not r.is_good()]
        if bad:
            raise SinkError(f"opcua-client {self.name}: PLC refused the write ({', '.join(bad)})")
        self.sequence = seq
        if "ack" in self._nodes:
            await self._await_ack(seq, entry.result_id)
        self.last_ack_wall_ns = time.time_ns()  # the write (and the PLC's ack, when configured)

    async def _await_ack(self, seq: int, result_id: str) -> None:
        node = self._nodes["ack"][0]
        t0 = time.monotonic()
        end = t0 + self.ocfg.ack_timeout_s
        while True:
            if int(await node.read_value() or 0) == seq:
                self.acked += 1
                self.last_ack_ms = round((time.monotonic() - t0) * 1000, 3)
                return
            if time.monotonic() >= end:
                self.ack_timeouts += 1
                raise TransientSinkError(
                    f"PLC did not ack sequence {seq} ({result_id}) within {self.ocfg.ack_timeout_s:g} s"
                )
            await asyncio.sleep(0.002)

    async def _skip_stale(self, client: Client, entry: JournalEntry, why: dict[str, Any]) -> None:
        if "stale_count" in self._nodes:  # first: a failure here retries the entry, not counted twice
            node, _ = self._nodes["stale_count"]
            count = int(await node.read_value() or 0) + 1
            await client.uaclient.write_attributes(
                [node.nodeid], [self._variant("stale_count", count)], ua.AttributeIds.Value
            )
        self.stale_skipped += 1
        log.warning("opcua-client %s: verdict %s (part %s) is stale (%s); not written to the PLC's tags",
                    self.name, entry.result_id, entry.payload.get("part_id"),
                    ", ".join(k for k in ("late", "expired", "replayed") if why.get(k)))
