"""systemd readiness, status and watchdog notifications (`sd_notify(3)`), pure Python.

Under a `Type=notify` unit systemd passes `NOTIFY_SOCKET` (a datagram socket path, or an abstract
name starting with '@') and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). Outside
systemd neither is set and every call here is a no-op, so the service runs the same by hand.

`WatchdogFeeder` sends `READY=1` once the pipeline reports healthy, a `STATUS=` line whenever what
it has to say changes, and `WATCHDOG=1` every half watchdog interval *only while* the health
callable says the pipeline makes progress. The service's health (`snapshot_health`) is the age of
the inference worker's and the deadline watchdog's heartbeats: a hung inference worker stops the
pings and systemd restarts the service; a camera that is merely absent does not (the line is in an
outage, shown in `STATUS=`, and the acquisition thread keeps reconnecting).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S = 5.0  # a worker heartbeat older than this is a hung worker
MAX_STATUS_CHARS = 400


def notify_address(env: Mapping[str, str]) -> str | None:
    """The AF_UNIX address `NOTIFY_SOCKET` names ('@name' -> abstract '\\0name'), or None."""
    raw = env.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    log.warning("NOTIFY_SOCKET=%r is not a socket path or abstract name; systemd notifications are off", raw)
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (`WATCHDOG_USEC`), in seconds, or None.

    `WATCHDOG_PID`, when set, names the process the watchdog is meant for; for any other the
    watchdog is not ours (e.g. a child that inherited the environment)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog pings are off", usec)
        return None
    return value / 1e6 if value > 0 else None


class Notifier:
    """Sends `KEY=value` datagrams to systemd's notification socket; a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)  # a stuck receiver must not stall the service

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls(notify_address(os.environ if env is None else env))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send one notification (`send(READY=1, STATUS="running")`); False if not sent."""
        if self._sock is None or self.address is None or not fields:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "replace")
        with self._lock:
            try:
                self._sock.sendto(message, self.address)
            except OSError as exc:
                self.failed += 1
                if self.failed == 1 or self.failed % 100 == 0:
                    log.warning("sd_notify to %r failed (%s; %d so far)", self.address, exc, self.failed)
                return False
            self.sent += 1
            return True

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


@dataclass(frozen=True)
class WatchdogHealth:
    """One look at the service: is it making progress, and a one-line status for `STATUS=`."""

    healthy: bool
    status: str
    problem: str | None = None  # why not healthy (logged, and shown in STATUS)


HealthFn = Callable[[], WatchdogHealth]


def _as_dict(snapshot: Any) -> Mapping[str, Any]:
    if isinstance(snapshot, Mapping):
        return snapshot
    to_dict = getattr(snapshot, "to_dict", None)
    if callable(to_dict):
        out = to_dict()
        if isinstance(out, Mapping):
            return out
    raise TypeError(f"a service snapshot must be a mapping or have to_dict(), got {type(snapshot).__name__}")


def describe_snapshot(snap: Mapping[str, Any]) -> str:
    """One line for `systemctl status`: state, decided counts, rate, and any camera outage."""
    stats = snap.get("stats") or {}
    verdicts = {str(k).upper(): v for k, v in (stats.get("verdicts") or {}).items()}
    counts = " ".join(f"{k}={verdicts[k]}" for k in ("PASS", "REJECT", "FAILSAFE") if k in verdicts)
    parts = [str(snap.get("state", "?")), f"{stats.get('decided', 0)} decided"]
    if counts:
        parts.append(counts)
    if stats.get("parts_per_min") is not None:
        parts.append(f"{float(stats['parts_per_min']):.0f}/min")
    down = [c for c in snap.get("cameras") or [] if not c.get("connected", True)]
    for cam in down:
        err = cam.get("last_error")
        parts.append(f"camera {cam.get('name')} OUTAGE" + (f" ({err})" if err else ""))
    return ", ".join(parts)


def snapshot_health(snapshot: Callable[[], Any], stale_after_s: float = DEFAULT_STALE_AFTER_S) -> HealthFn:
    """Health from the service's read model: both worker heartbeats younger than `stale_after_s`.

    The inference worker beats at least every 0.1 s even with no frames, so an old heartbeat
    means it is stuck (in an engine call, a lock); cameras do not count: an absent camera is an
    outage the service rides out, visible in the status line."""

    def health() -> WatchdogHealth:
        try:
            snap = _as_dict(snapshot())
        except Exception as exc:  # the read model itself failing is not progress
            return WatchdogHealth(False, f"snapshot failed: {exc}", f"snapshot failed: {exc}")
        workers = snap.get("workers") or {}
        problems = []
        for key, what in (
            ("inference_heartbeat_age_s", "inference worker"),
            ("watchdog_heartbeat_age_s", "deadline watchdog"),
        ):
            age = workers.get(key)
            if age is None:
                problems.append(f"{what}: no heartbeat")
            elif float(age) > stale_after_s:
                problems.append(f"{what}: no progress for {float(age):.1f} s")
        status = describe_snapshot(snap)
        if problems:
            problem = "; ".join(problems)
            return WatchdogHealth(False, f"UNHEALTHY ({problem}): {status}", problem)
        return WatchdogHealth(True, status)

    return health


class WatchdogFeeder:
    """A daemon thread: READY=1 when first healthy, STATUS= on change, WATCHDOG=1 while healthy.

    `interval_s` is the watchdog timeout (`WATCHDOG_USEC`); pings go every half of it. Without a
    watchdog the thread still reports readiness and status (every `status_period_s`)."""

    def __init__(
        self,
        notifier: Notifier,
        health: HealthFn,
        watchdog_s: float | None,
        status_period_s: float = 5.0,
    ) -> None:
        self.notifier = notifier
        self.health = health
        self.watchdog_s = watchdog_s
        self.period_s = watchdog_s / 2 if watchdog_s else status_period_s
        self.ready = False
        self.pings = 0
        self.last_health: WatchdogHealth | None = None
        self._last_status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)

    def start(self) -> None:
        if self.notifier.enabled:
            self._thread.start()

    def tick(self) -> WatchdogHealth:
        """One look: ping (and READY the first time) if healthy, STATUS if it changed."""
        try:
            h = self.health()
        except Exception as exc:  # a broken health check is not progress
            h = WatchdogHealth(False, f"health check failed: {exc}", str(exc))
        was = self.last_health
        self.last_health = h
        fields: dict[str, str | int] = {}
        if h.healthy and not self.ready:
            fields["READY"] = 1
            fields["MAINPID"] = os.getpid()
        status = h.status[:MAX_STATUS_CHARS].replace("\n", " ")
        if status != self._last_status:
            fields["STATUS"] = status
        if h.healthy and self.watchdog_s:
            fields["WATCHDOG"] = 1
        if not h.healthy and (was is None or was.healthy):
            log.error("watchdog: %s; not pinging systemd (it restarts the service if this lasts)", h.problem)
        elif h.healthy and was is not None and not was.healthy:
            log.warning("watchdog: healthy again, pinging systemd")
        if fields and self.notifier.send(**fields):
            if "READY" in fields:
                self.ready = True
                log.info("systemd: ready (watchdog %s)", f"{self.watchdog_s:g} s" if self.watchdog_s else "off")
            if "STATUS" in fields:
                self._last_status = status
            if "WATCHDOG" in fields:
                self.pings += 1
        return h

    def _run(self) -> None:
        self.tick()
        while not self._stop.wait(self.period_s):
            self.tick()

    def stop(self, status: str = "stopping: draining in-flight frames") -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.notifier.send(STOPPING=1, STATUS=status)


class ServiceWatchdog:
    """What `edge-inspect run` does under systemd: status while loading, then a `WatchdogFeeder`
    over the service's snapshot. A no-op outside systemd (no `NOTIFY_SOCKET`)."""

    def __init__(self, env: Mapping[str, str] | None = None, stale_after_s: float | None = None) -> None:
        env = os.environ if env is None else env
        self.notifier = Notifier.from_env(env)
        self.watchdog_s = watchdog_interval_s(env)
        if stale_after_s is None:  # detect a hang well before systemd's own timeout
            half = self.watchdog_s / 2 if self.watchdog_s else DEFAULT_STALE_AFTER_S
            stale_after_s = min(DEFAULT_STALE_AFTER_S, half)
        self.stale_after_s = stale_after_s
        self.feeder: WatchdogFeeder | None = None

    def status(self, text: str) -> None:
        self.notifier.send(STATUS=text)

    def start(self, snapshot: Callable[[], Any]) -> None:
        """Begin feeding from `snapshot` (the service's `snapshot()`), after the pipeline started."""
        if not self.notifier.enabled:
            return
        self.feeder = WatchdogFeeder(self.notifier, snapshot_health(snapshot, self.stale_after_s), self.watchdog_s)
        self.feeder.start()

    def stop(self) -> None:
        if self.feeder is not None:
            self.feeder.stop()
        elif self.notifier.enabled:
            self.notifier.send(STOPPING=1)
        self.notifier.close()
