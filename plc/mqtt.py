"""Sink type ``mqtt``: every verdict to an MQTT v5 broker through a durable outbox.

The verdict is journaled on disk (SQLite, WAL: `edge.sinks.durable`) before it is published
and deleted only when the broker has acknowledged it (QoS 1 PUBACK). A broker outage grows the
outbox, not the pipeline's latency; after the outage, or after a restart of the service (even a
SIGKILL), the outbox is published with each verdict's original result id and timestamps. What
is stale by then goes to the station's ``late/`` topics, never to the current ones (see
`plc.stale`, `plc.mqtt_model`). Topics, payload and the handshake: docs/PLC.md.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sinks.durable import DurableSink, DurableSinkConfigBase
from edge.sinks.journal import JournalEntry
from plc.mqtt_link import LinkSettings, MqttLink, read_password
from plc.mqtt_model import BEHIND, ONLINE, Topics


class MqttTlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(None, description="CA certificate(s) the broker's certificate must chain to.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Its private key.")
    insecure_hostname: bool = Field(False, description="Skip the broker host name check (the chain is still checked).")


class MqttSinkConfig(DurableSinkConfigBase):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", description="Broker address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS, usually).")
    station: str = Field("station1", description="Station name: topics are <topic_prefix>/<station>/...")
    topic_prefix: str = Field("edge-inspect", description="First topic level ('' for none).")
    client_id: str | None = Field(None, description="MQTT client id; default edge-inspect-<station>-<host>.")
    username: str | None = None
    password_env: str | None = Field(None, description="Environment variable holding the password (preferred).")
    password: str | None = Field(None, description="Password in the config (labs only; prefer password_env).")
    tls: MqttTlsConfig | None = Field(None, description="TLS to the broker (on when given).")
    keepalive_s: int = Field(30, ge=5, le=3600)
    ack_timeout_s: float = Field(10.0, gt=0, description="Longest wait for the broker's PUBACKs of one batch.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Wait for the first connection at start.")
    reconnect_max_s: int = Field(5, ge=1, description="Longest back-off between reconnection attempts.")
    publish_verdicts: bool = Field(True, description="Publish every verdict on <station>/verdict.")
    publish_rejects: bool = Field(True, description="Publish REJECT/FAILSAFE on <station>/reject (with expiry).")
    behind_backlog: int = Field(
        512, ge=1, description="Outbox size above which the station's state topic says 'behind'."
    )

    def build(self, base_dir: Path) -> MqttSink:
        return MqttSink(self.name or "mqtt", self, base_dir)


def _path(p: str | None, base_dir: Path) -> str | None:
    if p is None:
        return None
    path = Path(p).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


class MqttSink(DurableSink):
    def __init__(self, name: str, cfg: MqttSinkConfig, base_dir: Path) -> None:
        super().__init__(name, cfg.journal, cfg.journal_path(base_dir), cfg.queue_size)
        tls = cfg.tls
        settings = LinkSettings(
            host=cfg.host,
            port=cfg.port,
            topics=Topics(cfg.topic_prefix, cfg.station),
            client_id=cfg.client_id or f"edge-inspect-{cfg.station}-{socket.gethostname()}",
            username=cfg.username,
            password=read_password(cfg.password, cfg.password_env, f"mqtt sink {name}"),
            tls=tls is not None,
            ca_file=_path(tls.ca_file, base_dir) if tls else None,
            cert_file=_path(tls.cert_file, base_dir) if tls else None,
            key_file=_path(tls.key_file, base_dir) if tls else None,
            tls_insecure=bool(tls and tls.insecure_hostname),
            keepalive_s=cfg.keepalive_s,
            ack_timeout_s=cfg.ack_timeout_s,
            connect_timeout_s=cfg.connect_timeout_s,
            reconnect_max_s=cfg.reconnect_max_s,
            publish_verdicts=cfg.publish_verdicts,
            publish_rejects=cfg.publish_rejects,
            max_inflight=max(20, min(1000, cfg.journal.batch_size * 2)),
        )
        self.link = MqttLink(settings, name)
        self.behind_backlog = cfg.behind_backlog

    def open(self) -> None:
        self.link.open(meanwhile=self.journal_waiting)

    def deliver(self, entries: list[JournalEntry]) -> int | None:
        self.link.deliver(entries, meanwhile=self.journal_waiting)
        waiting = self.backlog() - len(entries)
        self.link.set_state(BEHIND if waiting > self.behind_backlog else ONLINE)
        return None

    def shutdown(self) -> None:
        self.link.close()

    def extra_health(self) -> dict[str, Any]:
        return self.link.health()
