"""The ``opcua-server`` sink with ``process: true``: the station's OPC UA server in a process of its own.

asyncua is pure Python: for every verdict it writes the flat variables, builds the event and
encrypts the notifications, holding the GIL the whole time. In the service's process that is
the moment the MQTT sink's writer, paho's network thread and the inference worker's Python want
it (benchmarks/bridge_isolation.py: the MQTT path's p50 doubles). In its own process the server
runs beside them on the CPUs instead of between them.

    service process                                        server process (spawned)
    submit(verdict) --V record JSON (non-blocking)-->      OpcUaServerSink (in-process mode) + RemoteControl
    state pusher    --S mode, recipes, sets, ready-->      cached: what the server reads
    RPC thread      <--C halt / single / activate ...--    a method call of a client
                    --R result + fresh state -------->
    health()        <--H the server's health (0.5 s)--

One AF_UNIX SOCK_SEQPACKET pair: every message is one datagram (a kind byte, then JSON), sent
whole or not at all, so `submit` never blocks: when the server process falls behind far enough
to fill the socket, the verdict is dropped for this sink and counted (the PLC sees the gap in
`Sequence`), as the in-process sink does when its queue is full.

Safety: the server process treats the service's state as stale (not Ready: the heartbeat stops,
the PLC fails safe) when no state arrived for `max_heartbeat_age_s + heartbeat_s`; it exits when
the service's end of the socket closes (a crash of the service closes its server, and the PLC's
session with it). A server process that dies is reported (`live` false, the exit code) and
started again with back-off.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import ConfigError, EdgeInspectError, SinkError
from edge.verdict import Verdict

if TYPE_CHECKING:
    from edge.control import ServiceContext
    from plc.opcua_server import OpcUaServerSinkConfig

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20  # one datagram: a verdict record is a few KB
# what the server process may ask of the service's control: the actions (reads come with the state)
ACTIONS = frozenset({"halt", "resume", "single", "activate_recipe", "activate_decision_set"})


def _send(sock: socket.socket, kind: bytes, doc: Any) -> None:
    """One message: a datagram, written whole (concurrent senders cannot interleave)."""
    sock.send(kind + json.dumps(doc, separators=(",", ":")).encode())


def _state(control: Any, ready: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"ready": ready, "at": time.monotonic()}
    if control is None:
        return out
    out.update(mode=control.mode(), recipes=control.recipes(), recipe=control.active_recipe())
    if hasattr(control, "decision_sets"):
        out.update(sets=control.decision_sets(), set=control.active_decision_set())
    return out


# -- the service's side -------------------------------------------------------------------------------
class OpcUaServerProcess:
    """The sink the service holds: it feeds the server process and serves its control calls."""

    kind = "best_effort"

    def __init__(self, name: str, cfg: OpcUaServerSinkConfig, cert: Path, key: Path, trusted: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.paths = (str(cert), str(key), str(trusted))
        self.ctx: ServiceContext | None = None
        self.control: Any = None
        self._probe: Callable[[], bool] | None = None
        self._sock: socket.socket | None = None
        self._proc: Any = None
        self._stop = threading.Event()  # the state pusher, and the restart back-off, end
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._rpc = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"opcua-{name}-rpc")
        self._health: dict[str, Any] = {}
        self.submitted = self.dropped = 0
        self.restarts = 0
        self.last_error: str | None = None

    @property
    def endpoint(self) -> str:
        return self.cfg.endpoint

    # -- wiring -------------------------------------------------------------------------------------
    def bind(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.control = ctx.control
        ctx.control.on_change(lambda *_: self.push_state())

    def use(self, control: Any = None, ready_probe: Callable[[], bool] | None = None) -> None:
        """Serve this control (tests, tools): what `bind` does for the service."""
        self.control = control
        self._probe = ready_probe

    def _ready(self) -> bool:
        from plc.opcua_server import workers_ready

        if self._probe is not None:
            return self._probe()
        return workers_ready(self.ctx, self.cfg.max_heartbeat_age_s)

    # -- Sink protocol ------------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(timeout=120.0)
        for target, what in ((self._reader, "reader"), (self._pusher, "state")):
            t = threading.Thread(target=target, name=f"opcua-{self.name}-{what}", daemon=True)
            t.start()
            self._threads.append(t)

    def _spawn(self, timeout: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ctx = mp.get_context("spawn")  # not fork: this process has threads (ONNX Runtime, sinks, the I/O loop)
        state = _state(self.control, self._ready())
        proc = ctx.Process(
            target=server_main,
            args=(theirs, self.name, self.cfg.model_dump(mode="json"), *self.paths, state),
            name=f"opcua-{self.name}",
            daemon=True,
        )
        proc.start()
        theirs.close()
        ours.settimeout(timeout)
        try:
            first = ours.recv(MAX_MESSAGE)
        except (TimeoutError, OSError) as exc:
            proc.kill()
            raise SinkError(f"opcua server {self.name}: its process did not start ({exc})") from exc
        if first[:1] != b"K":
            proc.join(5)
            why = json.loads(first[1:]) if first[:1] == b"E" else f"exit code {proc.exitcode}"
            raise SinkError(f"opcua server {self.name}: {why}")
        ours.settimeout(None)
        self._sock, self._proc = ours, proc
        self.last_error = None

    def submit(self, verdict: Verdict) -> bool:
        sock = self._sock
        if sock is None:
            self.dropped += 1
            return False
        try:
            sent = sock.send(b"V" + verdict.to_json().encode(), socket.MSG_DONTWAIT)  # whole, or not at all
        except (BlockingIOError, InterruptedError, OSError):
            sent = 0
        if not sent:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    def push_state(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            state = _state(self.control, self._ready())
            _send(sock, b"S", state)
        except Exception as exc:  # a closed socket (the process is gone: the reader restarts it)
            log.debug("opcua server %s: state not sent: %s", self.name, exc)

    def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        self._stop.set()
        sock, proc = self._sock, self._proc
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_WR)  # EOF: the server process publishes what it has and stops
            except OSError:
                pass
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                log.warning("opcua server %s: its process did not stop in %.1f s; killed", self.name, timeout)
                proc.kill()
                proc.join(5)
        for t in self._threads:  # the reader takes the server's last health report, then its EOF
            t.join(2.0)
        self._sock = None
        if sock is not None:
            sock.close()
        self._rpc.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        h = dict(self._health)
        alive = self._proc is not None and self._proc.is_alive() and self._sock is not None
        h.update({
            "name": self.name,
            "kind": self.kind,
            "submitted": self.submitted,
            "dropped": self.dropped + int(h.get("dropped", 0)),
            "live": bool(alive and h.get("live")),
            "backlog": int(h.get("backlog", 0)),
            "errors": int(h.get("errors", 0)),
            "last_error": self.last_error or h.get("last_error"),
            "process": {"pid": self._proc.pid if self._proc is not None else None, "restarts": self.restarts},
        })
        h.setdefault("written", 0)
        return h

    # -- threads --------------------------------------------------------------------------------------
    def _pusher(self) -> None:
        while not self._stop.wait(min(0.5, self.cfg.heartbeat_s / 2)):
            self.push_state()

    def _reader(self) -> None:
        backoff = 1.0
        sock = self._sock
        while True:
            data = b""
            if sock is not None:
                try:
                    data = sock.recv(MAX_MESSAGE)
                except OSError:
                    data = b""
            if data:
                self._handle(data)
                continue
            if self._closing:
                return
            # the server process is gone: say so, start it again with back-off
            if self._proc is not None:
                self._proc.join(1.0)
            code = self._proc.exitcode if self._proc is not None else None
            self.last_error = f"opcua server process exited ({code})"
            log.error("opcua server %s: %s; starting it again in %.0f s", self.name, self.last_error, backoff)
            self._sock = None
            self._health["live"] = False
            if sock is not None:
                sock.close()
            if self._stop.wait(backoff):
                return
            try:
                self._spawn(timeout=120.0)
                sock = self._sock
                self.restarts += 1
                backoff = 1.0
            except Exception as exc:
                self.last_error = str(exc)
                backoff = min(backoff * 2, 30.0)

    def _handle(self, data: bytes) -> None:
        kind = data[:1]
        doc = json.loads(data[1:]) if len(data) > 1 else None
        if kind == b"H" and isinstance(doc, dict):
            self._health = doc
        elif kind == b"C" and isinstance(doc, dict):
            self._rpc.submit(self._call, doc)

    def _call(self, doc: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": doc["id"]}
        method = str(doc.get("method"))
        try:
            if method not in ACTIONS or self.control is None:
                raise EdgeInspectError(f"{method} is not a control action")
            reply["value"] = getattr(self.control, method)(*doc.get("args", []))
        except ConfigError as exc:
            reply["error"], reply["config_error"] = str(exc), True
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
        reply["state"] = _state(self.control, self._ready())
        sock = self._sock
        if sock is not None:
            try:
                _send(sock, b"R", reply)
            except (OSError, TypeError, ValueError) as exc:
                log.warning("opcua server %s: reply to %s not sent: %s", self.name, method, exc)


# -- the server's process ------------------------------------------------------------------------------
class RemoteControl:
    """The service's control as the server process sees it: reads from the last state the service
    sent, actions asked of the service and answered (with the state after them)."""

    def __init__(self, sock: socket.socket, state: dict[str, Any], stale_after_s: float) -> None:
        self.sock = sock
        self.stale_after_s = stale_after_s
        self._state = dict(state, at=time.monotonic())
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}

    def update(self, state: dict[str, Any]) -> None:
        self._state = dict(state, at=time.monotonic())  # our clock: the service's is another process's

    def ready(self) -> bool:
        s = self._state
        return bool(s.get("ready")) and time.monotonic() - float(s["at"]) <= self.stale_after_s

    def resolve(self, reply: dict[str, Any]) -> None:
        slot = self._pending.get(int(reply["id"]))
        if slot is not None:
            slot[1].append(reply)
            slot[0].set()

    def _ask(self, method: str, *args: Any) -> Any:
        with self._lock:
            self._next += 1
            rid = self._next
            done: threading.Event = threading.Event()
            box: list[dict[str, Any]] = []
            self._pending[rid] = (done, box)
            _send(self.sock, b"C", {"id": rid, "method": method, "args": list(args)})
        try:
            if not done.wait(120.0):
                raise EdgeInspectError(f"the service did not answer {method}")
        finally:
            self._pending.pop(rid, None)
        reply = box[0]
        if "state" in reply:
            self.update(reply["state"])
        if "error" in reply:
            raise (ConfigError if reply.get("config_error") else EdgeInspectError)(reply["error"])
        return reply.get("value")

    # reads
    def mode(self) -> str:
        return str(self._state.get("mode", "halted"))

    def recipes(self) -> list[str]:
        return list(self._state.get("recipes", ["default"]))

    def active_recipe(self) -> str:
        return str(self._state.get("recipe", "default"))

    def decision_sets(self) -> list[str]:
        return list(self._state.get("sets", ["default"]))

    def active_decision_set(self) -> str:
        return str(self._state.get("set", "default"))

    # actions
    def halt(self, who: str = "opcua") -> None:
        self._ask("halt", who)

    def resume(self, who: str = "opcua") -> None:
        self._ask("resume", who)

    def single(self, n: int = 1, who: str = "opcua") -> None:
        self._ask("single", n, who)

    def activate_recipe(self, name: str, who: str = "opcua") -> str:
        return str(self._ask("activate_recipe", name, who))

    def activate_decision_set(self, name: str, who: str = "opcua") -> Any:
        return self._ask("activate_decision_set", name, who)


def server_main(
    sock: socket.socket, name: str, cfg_doc: dict[str, Any], cert: str, key: str, trusted: str, state: dict[str, Any]
) -> None:
    """The server process: the in-process sink on its own I/O loop, fed from the socket."""
    from edge.ioloop import IoLoop
    from plc.opcua_server import OpcUaServerSink, OpcUaServerSinkConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = OpcUaServerSinkConfig.model_validate(cfg_doc)
    remote = RemoteControl(sock, state, cfg.max_heartbeat_age_s + cfg.heartbeat_s)
    loop = IoLoop(f"opcua-{name}")
    loop.start()
    sink = OpcUaServerSink(name, cfg, Path(cert), Path(key), Path(trusted))
    sink.use(loop, remote, ready_probe=remote.ready)
    try:
        sink.start()
    except Exception as exc:
        _send(sock, b"E", str(exc))
        loop.stop()
        return
    _send(sock, b"K", None)
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(0.5):
            try:
                _send(sock, b"H", sink.health())
            except OSError:
                return

    threading.Thread(target=report, name="health", daemon=True).start()
    try:
        while True:
            data = sock.recv(MAX_MESSAGE)
            if not data:  # the service closed its end (a stop, or its crash)
                break
            kind = data[:1]
            if kind == b"V":
                sink.submit_record(json.loads(data[1:]))
            elif kind == b"S":
                remote.update(json.loads(data[1:]))
            elif kind == b"R":
                remote.resolve(json.loads(data[1:]))
    except OSError:
        pass
    finally:
        stop.set()
        sink.close()
        loop.stop()
        try:
            _send(sock, b"H", sink.health())  # the final counts, for the service's summary
        except OSError:
            pass
