"""The demo's PLC side: a local mosquitto on a free loopback port, and the demo's own subscribers.

`PlcDemo` starts the broker (a generated config in the demo's folder, loopback only), an MQTT
subscriber on the station's topics and an OPC UA client that logs in to the station's server
(Basic256Sha256 SignAndEncrypt, a read-only demo user, its certificate in the server's trust
list) and subscribes to its ResultReadyEvents. `sinks()` are the two sink sections the demo
adds; `summary(service_summary)` is the demo summary's ``plc`` section, counted by these
independent subscribers: ``{mqtt: {published, acked, received}, opcua: {events_received}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from plc.certs import make_leaf, write_keypair

log = logging.getLogger(__name__)

STATION = "demo"
DEMO_USER = "demo-viewer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


class PlcDemo:
    def __init__(self, out_dir: Path) -> None:
        self.dir = (out_dir / "plc").resolve()
        self.mqtt_port = _free_port()
        self.opcua_port = _free_port()
        self.password = secrets.token_urlsafe(12)
        self.broker: subprocess.Popen[bytes] | None = None
        self.mqtt_note: str | None = None
        self._lock = threading.Lock()
        self.mqtt_ids: set[str] = set()
        self.mqtt_messages = 0
        self.events = 0
        self.event_ids: set[str] = set()
        self._sub: mqtt.Client | None = None
        self._stop = threading.Event()
        self.mqtt_subscribed = threading.Event()
        self.opcua_subscribed = threading.Event()
        self._opcua_thread: threading.Thread | None = None
        self.opcua_note: str | None = None

    # -- set-up -------------------------------------------------------------------------------------
    def start(self) -> PlcDemo:
        # the subscriber's publish loop reports the service's server going away at the end as an error;
        # its client warns of what the demo chose (a session and publishing interval the server revises,
        # a loopback certificate without this machine's host name, a close after the server's)
        logging.getLogger("asyncua.client.ua_session").setLevel(logging.CRITICAL)
        for name in ("asyncua.client.client", "asyncua.client.ua_client", "asyncua.crypto.uacrypto"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start_broker()
        if self.broker is not None:
            self._start_mqtt_subscriber()
        self._prepare_opcua_client()
        self._opcua_thread = threading.Thread(target=self._opcua_main, name="demo-opcua-client", daemon=True)
        self._opcua_thread.start()
        return self

    def _start_broker(self) -> None:
        exe = _mosquitto()
        if exe is None:
            self.mqtt_note = "mosquitto not installed (scripts/setup.sh installs it): MQTT skipped"
            log.warning("demo: %s", self.mqtt_note)
            return
        conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.mqtt_port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 f"log_dest file {self.dir / 'mosquitto.log'}"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.broker = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=0.2):
                    log.info("demo: mosquitto on 127.0.0.1:%d", self.mqtt_port)
                    return
            except OSError:
                if self.broker.poll() is not None:
                    break
                time.sleep(0.05)
        self.mqtt_note = f"mosquitto did not start (see {self.dir / 'mosquitto.log'}): MQTT skipped"
        log.warning("demo: %s", self.mqtt_note)
        self._stop_broker()

    def _start_mqtt_subscriber(self) -> None:
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="edge-inspect-demo-subscriber",
                        protocol=mqtt.MQTTv5)
        c.on_connect = lambda client, *a: client.subscribe(f"edge-inspect/{STATION}/#", qos=1)
        c.on_subscribe = lambda *a: self.mqtt_subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.mqtt_port, keepalive=30)
        c.loop_start()
        self._sub = c

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.endswith("/verdict"):
            return
        try:
            rid = json.loads(msg.payload)["result_id"]
        except (ValueError, KeyError):
            return
        with self._lock:
            self.mqtt_messages += 1
            self.mqtt_ids.add(rid)

    def _prepare_opcua_client(self) -> None:
        pki = self.dir / "opcua-pki"
        self.client_uri = "urn:edge-inspect:demo-client"
        pair = make_leaf(None, "edge-inspect demo client", dns=["localhost"], ips=["127.0.0.1"], uri=self.client_uri)
        write_keypair(pair, pki / "client" / "cert.pem", pki / "client" / "key.pem")
        (pki / "trusted").mkdir(parents=True, exist_ok=True)
        (pki / "trusted" / "demo-client.der").write_bytes(pair.cert_der())
        self.pki = pki

    def sinks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.broker is not None:
            out.append({"type": "mqtt", "port": self.mqtt_port, "station": STATION, "client_id": "edge-inspect-demo"})
        out.append({
            "type": "opcua-server",
            "port": self.opcua_port,
            "station": STATION,
            "certificate": str(self.pki / "server_cert.der"),
            "private_key": str(self.pki / "server_key.pem"),
            "trusted_dir": str(self.pki / "trusted"),
            "users": [{"name": DEMO_USER, "password": self.password, "role": "read-only"}],
            "process": True,  # the server in a process of its own (docs/PLC.md): off the service's GIL
        })
        return out

    # -- the OPC UA subscriber (its own thread and loop: independent of the service) ----------------------
    def _opcua_main(self) -> None:
        try:
            asyncio.run(self._opcua())
        except Exception as exc:
            self.opcua_note = f"OPC UA subscriber: {type(exc).__name__}: {exc}"
            log.warning("demo: %s", self.opcua_note)

    async def _opcua(self) -> None:
        from asyncua import Client, ua
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        from plc.machine_vision import NAMESPACE_URI, RESULT_READY_EVENT_TYPE
        from plc.machine_vision.server import STATION_NS

        url = f"opc.tcp://127.0.0.1:{self.opcua_port}/edge-inspect"
        while not self._stop.is_set():  # the service starts its server after this thread
            client = Client(url, timeout=10, watchdog_intervall=10.0)  # a loaded host can stall a second
            client.application_uri = self.client_uri
            client.set_user(DEMO_USER)
            client.set_password(self.password)
            try:
                await client.set_security(SecurityPolicyBasic256Sha256, str(self.pki / "client" / "cert.pem"),
                                          str(self.pki / "client" / "key.pem"),
                                          mode=ua.MessageSecurityMode.SignAndEncrypt)
                await client.connect()
            except Exception:
                await asyncio.sleep(0.5)
                continue
            try:
                mv = await client.get_namespace_index(NAMESPACE_URI)
                ns = await client.get_namespace_index(STATION_NS)
                sub = await client.create_subscription(50, self)
                await sub.subscribe_events(client.get_node(ua.NodeId(ua.String("VisionSystem"), ua.Int16(ns))),
                                           client.get_node(ua.NodeId(ua.Int32(RESULT_READY_EVENT_TYPE), ua.Int16(mv))))
                log.info("demo: OPC UA subscriber logged in to %s as %s (SignAndEncrypt)", url, DEMO_USER)
                self.opcua_subscribed.set()
                while not self._stop.is_set():
                    await asyncio.sleep(0.1)
            except Exception as exc:
                log.info("demo: OPC UA subscriber reconnecting (%s)", exc)
            finally:
                try:
                    await client.disconnect()
                except Exception:
                    pass

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        """Block until the demo's own subscribers listen (called before the cameras start, so they
        see every verdict: OPC UA events and non-retained MQTT messages are not replayed to late
        subscribers)."""
        end = time.monotonic() + timeout
        waits = [self.opcua_subscribed] + ([self.mqtt_subscribed] if self._sub is not None else [])
        for ev in waits:
            if not ev.wait(max(0.0, end - time.monotonic())):
                log.warning("demo: a subscriber is not listening yet after %.0f s; starting anyway", timeout)
                return

    def status_change_notification(self, status: Any) -> None:
        """The server went away (the service stopping): the loop above reconnects or ends."""

    def event_notification(self, event: Any) -> None:
        with self._lock:
            self.events += 1
            rid = getattr(getattr(event, "ResultId", None), "Id", None)
            if rid:
                self.event_ids.add(rid)

    # -- summary and stop ---------------------------------------------------------------------------------
    def summary(self, service_summary: dict[str, Any]) -> dict[str, Any]:
        sinks = {h.get("name"): h for h in service_summary.get("sinks", [])}
        # what the service's own subscribers hold may still be in flight for a moment after it stopped
        end = time.monotonic() + 3.0
        mq = sinks.get("mqtt", {})
        while time.monotonic() < end and len(self.mqtt_ids) < int(mq.get("written", 0) or 0):
            time.sleep(0.05)
        with self._lock:
            out: dict[str, Any] = {
                "mqtt": {
                    "broker": f"127.0.0.1:{self.mqtt_port}" if self.broker is not None else None,
                    "topics": f"edge-inspect/{STATION}/#",
                    "published": mq.get("submitted", 0),
                    "acked": mq.get("written", 0),
                    "received": len(self.mqtt_ids),
                },
                "opcua": {
                    "endpoint": f"opc.tcp://127.0.0.1:{self.opcua_port}/edge-inspect",
                    "events_received": self.events,
                    "published": sinks.get("opcua-server", {}).get("written", 0),
                },
            }
        if self.mqtt_note:
            out["mqtt"]["note"] = self.mqtt_note
        if self.opcua_note:
            out["opcua"]["note"] = self.opcua_note
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._opcua_thread is not None:
            self._opcua_thread.join(15)
        if self._sub is not None:
            self._sub.disconnect()
            self._sub.loop_stop()
        self._stop_broker()

    def _stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.terminate()
            try:
                self.broker.wait(10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
            self.broker = None
