"""One MQTT v5 session to the broker (paho-mqtt 2.x): connect, last will, publish a batch, wait for PUBACKs.

`MqttLink.deliver(entries)` publishes every message of a batch of journal entries at QoS 1 and
blocks until the broker acknowledged them all; it raises `TransientSinkError` while the broker
cannot be reached (the durable sink keeps the batch in its journal and retries) and
`PermanentSinkError` when the broker refused a message for good (not authorised, bad topic).
Both `open` and `deliver` take a `meanwhile` callback, called between slices (`WAIT_SLICE_S`) of
their waits, for the durable sink to journal what arrives while the broker is slow to answer.
paho's network thread reconnects on its own with back-off; `online` is published (retained) on
the station's state topic at every connect, and the broker publishes the last will `offline`
when the connection dies without a clean close.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import PermanentSinkError, SinkError, TransientSinkError
from plc import mqtt_model
from plc.stale import classify

log = logging.getLogger(__name__)

WAIT_SLICE_S = 0.05  # a wait on the broker (connect, PUBACK) is cut into slices; `meanwhile` runs between


def _nothing() -> None:
    pass


def wait_in_slices(wait: Callable[[float], Any], timeout_s: float, meanwhile: Callable[[], None]) -> bool:
    """Wait up to `timeout_s` through `wait(slice_s)` (truthy when done) in slices of `WAIT_SLICE_S`,
    calling `meanwhile` between them; whether it was done in time."""
    end = time.monotonic() + timeout_s
    while not wait(max(0.0, min(WAIT_SLICE_S, end - time.monotonic()))):
        if time.monotonic() >= end:
            return False
        meanwhile()
    return True


class Entry(Protocol):
    """What the link needs of a journal entry (`edge.sinks.journal.JournalEntry`)."""

    @property
    def result_id(self) -> str: ...

    @property
    def payload(self) -> dict[str, Any]: ...

    @property
    def attempts(self) -> int: ...

    @property
    def replayed(self) -> bool: ...


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    topics: mqtt_model.Topics
    client_id: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False
    tls_insecure: bool = False  # skip the broker host name check (never the chain check)
    keepalive_s: int = 30
    ack_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    reconnect_max_s: int = 30
    publish_verdicts: bool = True
    publish_rejects: bool = True
    max_inflight: int = 200


# PUBACK reason codes that will not change on a retry
_PERMANENT_PUBACK = {
    0x87: "not authorized",
    0x90: "topic name invalid",
    0x95: "packet too large",
    0x99: "payload format invalid",
}


class MqttLink:
    def __init__(self, settings: LinkSettings, name: str = "mqtt") -> None:
        self.s = settings
        self.name = name
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._refused: dict[int, ReasonCode] = {}
        self._closing = False
        self._state = mqtt_model.OFFLINE
        self._props: dict[int | None, Properties] = {}
        self._session = 0  # +1 at every disconnect: a batch spanning one is delivered again, re-classified
        self.unacked_dropped = 0  # messages paho held unacknowledged at a disconnect (the outbox keeps them)
        self.connects = 0
        self.disconnects = 0
        self.published = 0  # messages acknowledged by the broker
        self.published_current = 0  # verdicts published as current
        self.published_stale = 0  # verdicts published on the late/ topics
        self.last_ack_wall_ns: int | None = None
        self.last_error: str | None = None

    # -- session --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def open(self, meanwhile: Callable[[], None] = _nothing) -> None:
        s = self.s
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5,
        )
        client.max_inflight_messages_set(s.max_inflight)
        client.reconnect_delay_set(1, max(1, s.reconnect_max_s))
        client.will_set(s.topics.state, mqtt_model.OFFLINE, qos=1, retain=True)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls or s.ca_file or s.cert_file:
            try:
                client.tls_set(
                    ca_certs=s.ca_file,
                    certfile=s.cert_file,
                    keyfile=s.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise SinkError(f"mqtt sink {self.name}: TLS setup failed ({exc})") from exc
            client.tls_insecure_set(s.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        try:
            client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=True)
        except (OSError, ValueError) as exc:
            raise SinkError(f"mqtt sink {self.name}: cannot connect to {s.host}:{s.port} ({exc})") from exc
        client.loop_start()
        wait_in_slices(self._connected.wait, s.connect_timeout_s, meanwhile)
        if not self.connected:
            log.warning(
                "mqtt sink %s: broker %s:%s not reachable yet (%s); verdicts wait in the outbox",
                self.name, s.host, s.port, self.last_error or "no answer",
            )

    def close(self, timeout: float = 5.0) -> None:
        client = self._client
        if client is None:
            return
        self._closing = True
        if self.connected:
            try:
                info = client.publish(self.s.topics.state, mqtt_model.OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        client.loop_stop()
        self._client = None
        self._connected.clear()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {rc}"
            log.warning("mqtt sink %s: %s", self.name, self.last_error)
            return
        self.connects += 1
        self._connected.set()
        self._state = mqtt_model.ONLINE
        client.publish(self.s.topics.state, mqtt_model.ONLINE, qos=1, retain=True)
        log.info("mqtt sink %s: connected to %s:%s", self.name, self.s.host, self.s.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self._connected.is_set() and self._closing:
            log.info("mqtt sink %s: disconnected", self.name)
        elif self._connected.is_set():  # (after a refused CONNECT the refusal stays the last error)
            self.disconnects += 1
            self.last_error = f"disconnected: {rc}"
            log.warning("mqtt sink %s: disconnected (%s); reconnecting", self.name, rc)
        self._session += 1
        self._connected.clear()
        self._drop_unacked(client)

    def _drop_unacked(self, client: mqtt.Client) -> None:
        """Forget what paho would re-send by itself after reconnecting.

        paho re-publishes unacknowledged QoS 1 messages, as they were, when it reconnects: a reject
        built as current before the outage would reach the line after its deadline, still marked
        current. The outbox keeps those verdicts; the next delivery classifies them again.
        """
        mutex = getattr(client, "_out_message_mutex", None)
        out = getattr(client, "_out_messages", None)
        if mutex is None or out is None:  # a paho without these internals: duplicates stay possible
            return
        with mutex:
            n = len(out)
            out.clear()
            client._inflight_messages = 0
        self.unacked_dropped += n

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            with self._lock:
                self._refused[mid] = rc
        else:
            self.last_ack_wall_ns = time.time_ns()

    # -- delivery -------------------------------------------------------------
    def _properties(self, msg: mqtt_model.OutMessage) -> Properties:
        """PUBLISH properties, built once per expiry value (paho packs them again for every message)."""
        props = self._props.get(msg.expiry_s)
        if props is None:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = "application/json"
            if msg.expiry_s is not None:
                props.MessageExpiryInterval = msg.expiry_s
            self._props[msg.expiry_s] = props
        return props

    def deliver(self, entries: Sequence[Entry], meanwhile: Callable[[], None] = _nothing) -> None:
        """Publish the batch at QoS 1; return once the broker acknowledged every message."""
        client = self._client
        if client is None or not self.connected:
            why = self.last_error or "connecting"
            raise TransientSinkError(f"mqtt {self.s.host}:{self.s.port} not connected ({why})")
        session = self._session
        now = time.time_ns()
        pending: list[tuple[str, mqtt.MQTTMessageInfo]] = []
        current = stale = 0
        for entry in entries:
            delivery = classify(entry.payload, now, replayed=entry.replayed, attempts=entry.attempts)
            if delivery.stale:
                stale += 1
            else:
                current += 1
            msgs = mqtt_model.messages(
                entry.payload, self.s.topics, delivery, self.s.publish_verdicts, self.s.publish_rejects
            )
            for msg in msgs:
                info = client.publish(msg.topic, msg.payload, qos=1, properties=self._properties(msg))
                if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    raise TransientSinkError("mqtt client queue full")
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    self._drop_unacked(client)
                    raise TransientSinkError(f"mqtt connection lost while publishing {entry.result_id}")
                pending.append((entry.result_id, info))
        end = time.monotonic() + self.s.ack_timeout_s
        for result_id, info in pending:
            try:
                self._await_puback(info, session, end, meanwhile)
            except (RuntimeError, ValueError) as exc:
                raise TransientSinkError(f"mqtt publish of {result_id} failed: {exc}") from exc
            except TransientSinkError as exc:
                raise TransientSinkError(f"mqtt publish of {result_id}: {exc}") from None
        with self._lock:
            refused = {info.mid: self._refused.pop(info.mid) for _, info in pending if info.mid in self._refused}
        if refused:
            codes = {int(rc.value) for rc in refused.values()}
            text = ", ".join(sorted({str(rc) for rc in refused.values()}))
            if codes & set(_PERMANENT_PUBACK):
                raise PermanentSinkError(f"broker refused {len(refused)} message(s): {text}")
            raise TransientSinkError(f"broker refused {len(refused)} message(s) for now: {text}")
        self.published += len(pending)
        self.published_current += current
        self.published_stale += stale

    def set_state(self, state: str) -> None:
        """Publish the station's state (retained) when it changed: online / behind (offline: the will)."""
        client = self._client
        if client is None or not self.connected or state == self._state:
            return
        self._state = state
        client.publish(self.s.topics.state, state, qos=1, retain=True)
        log.log(logging.WARNING if state != mqtt_model.ONLINE else logging.INFO,
                "mqtt sink %s: station state %s", self.name, state)

    def _await_puback(
        self, info: mqtt.MQTTMessageInfo, session: int, end: float, meanwhile: Callable[[], None]
    ) -> None:
        waited = False
        while not info.is_published():
            if self._session != session or not self.connected:
                raise TransientSinkError("connection lost before the PUBACK")
            left = end - time.monotonic()
            if left <= 0:
                raise TransientSinkError(f"no PUBACK within {self.s.ack_timeout_s:g} s")
            if waited:
                meanwhile()
            info.wait_for_publish(min(WAIT_SLICE_S, left))
            waited = True

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "messages_acked": self.published,
            "published_current": self.published_current,
            "published_stale": self.published_stale,
            "last_ack_wall_ns": self.last_ack_wall_ns,
            "last_ack_age_s": age_s(self.last_ack_wall_ns),
            "unacked_dropped_at_disconnect": self.unacked_dropped,
        }


def age_s(wall_ns: int | None) -> float | None:
    """Seconds since a wall-clock time (None: never)."""
    return round((time.time_ns() - wall_ns) / 1e9, 3) if wall_ns else None


def read_password(password: str | None, password_env: str | None, what: str) -> str | None:
    """The password from the config or (preferred) from an environment variable."""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise SinkError(f"{what}: environment variable {password_env} (password_env) is not set")
        return value
    return password
