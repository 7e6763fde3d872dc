"""systemd notifications over a real AF_UNIX datagram socket standing in for NOTIFY_SOCKET.

The unit tests drive `Notifier` / `WatchdogFeeder` directly; the service tests run the real
pipeline (replay camera, ONNX Runtime) under `ServiceWatchdog` and read what systemd would get.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge.app import build_service
from edge.config import parse_config
from edge.engines.base import Engine, ModelInfo
from edge.sdnotify import (
    Notifier,
    ServiceWatchdog,
    WatchdogFeeder,
    WatchdogHealth,
    describe_snapshot,
    notify_address,
    snapshot_health,
    watchdog_interval_s,
)


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: a bound datagram socket and the messages it got."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"edge-inspect-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:  # short path: AF_UNIX paths are limited to 108 bytes
            self._dir = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._recv, daemon=True)
        self._thread.start()

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.env_value}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            env["WATCHDOG_PID"] = str(os.getpid())
        return env

    def got(self, key: str) -> list[dict[str, str]]:
        with self._lock:
            return [m for m in self.messages if key in m]

    def count(self, key: str) -> int:
        return len(self.got(key))

    def wait_for(self, key: str, n: int = 1, timeout: float = 60) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count(key) >= n:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(abstract=request.param == "abstract")
    yield fake
    fake.close()


@pytest.fixture
def systemd_path() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


# -- the protocol ---------------------------------------------------------------------------


def test_addresses_and_watchdog_interval_from_the_environment() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@sd-abstract"}) == "\0sd-abstract"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None  # not supported: off, not a crash
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    # the watchdog is for another process (a child inherited the environment): not ours
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0


def test_notifier_sends_datagrams_to_path_and_abstract_sockets(systemd: FakeSystemd) -> None:
    n = Notifier.from_env(systemd.env())
    assert n.enabled
    assert n.send(READY=1, STATUS="hello world")
    assert systemd.wait_for("READY", timeout=5)
    assert systemd.got("READY")[0] == {"READY": "1", "STATUS": "hello world"}
    n.close()


def test_notifier_without_systemd_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and not n.send(READY=1)


def test_notifier_survives_a_vanished_socket(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone"))
    assert not n.send(WATCHDOG=1)  # counted and logged, never raised into the service
    assert n.failed == 1


# -- the feeder -------------------------------------------------------------------------------


class Health:
    """A switchable health answer for the feeder's own logic (the service tests use the real one)."""

    def __init__(self) -> None:
        self.value = WatchdogHealth(True, "running, 3 decided")

    def __call__(self) -> WatchdogHealth:
        return self.value


def test_feeder_readies_once_pings_while_healthy_and_stops_pinging_when_not(systemd_path: FakeSystemd) -> None:
    health = Health()
    health.value = WatchdogHealth(False, "starting", "inference worker: no heartbeat")
    feeder = WatchdogFeeder(Notifier.from_env(systemd_path.env()), health, watchdog_s=0.2)
    feeder.tick()
    assert not feeder.ready  # not READY before the pipeline is healthy
    health.value = WatchdogHealth(True, "running, 3 decided")
    for _ in range(3):
        feeder.tick()
    assert systemd_path.wait_for("WATCHDOG", 3, timeout=5)
    assert systemd_path.count("READY") == 1
    first = systemd_path.messages[0]
    assert first == {"STATUS": "starting"}
    assert systemd_path.got("READY")[0]["MAINPID"] == str(os.getpid())
    assert [m["STATUS"] for m in systemd_path.got("STATUS")] == ["starting", "running, 3 decided"]
    health.value = WatchdogHealth(False, "UNHEALTHY (inference worker: no progress for 9.0 s)", "hung")
    before = systemd_path.count("WATCHDOG")
    for _ in range(3):
        feeder.tick()
    time.sleep(0.2)
    assert systemd_path.count("WATCHDOG") == before
    assert "UNHEALTHY" in systemd_path.got("STATUS")[-1]["STATUS"]
    feeder.stop()
    assert systemd_path.wait_for("STOPPING", timeout=5)


def test_feeder_thread_pings_at_half_the_watchdog_interval(systemd_path: FakeSystemd) -> None:
    feeder = WatchdogFeeder(Notifier.from_env(systemd_path.env()), Health(), watchdog_s=0.2)
    assert feeder.period_s == pytest.approx(0.1)
    feeder.start()
    try:
        assert systemd_path.wait_for("WATCHDOG", 5, timeout=30)
    finally:
        feeder.stop()


def test_a_health_check_that_raises_is_not_progress(systemd_path: FakeSystemd) -> None:
    def broken() -> WatchdogHealth:
        raise RuntimeError("boom")

    feeder = WatchdogFeeder(Notifier.from_env(systemd_path.env()), broken, watchdog_s=1.0)
    h = feeder.tick()
    assert not h.healthy and "boom" in h.status
    assert systemd_path.wait_for("STATUS", timeout=5)
    assert systemd_path.count("WATCHDOG") == 0 and systemd_path.count("READY") == 0


def test_snapshot_health_judges_worker_heartbeats_not_cameras() -> None:
    snap: dict[str, Any] = {
        "state": "running",
        "cameras": [{"name": "top", "connected": False, "last_error": "folder gone"}],
        "workers": {"inference_heartbeat_age_s": 0.05, "watchdog_heartbeat_age_s": 0.02},
        "stats": {"decided": 12, "verdicts": {"PASS": 10, "REJECT": 1, "FAILSAFE": 1}, "parts_per_min": 600.0},
    }
    h = snapshot_health(lambda: snap, stale_after_s=2.0)()
    assert h.healthy  # an absent camera is an outage, not a hang
    assert "camera top OUTAGE (folder gone)" in h.status and "12 decided" in h.status
    assert "PASS=10 REJECT=1 FAILSAFE=1" in describe_snapshot(snap)
    snap["workers"]["inference_heartbeat_age_s"] = 7.5
    h = snapshot_health(lambda: snap, stale_after_s=2.0)()
    assert not h.healthy and h.problem == "inference worker: no progress for 7.5 s"
    snap["workers"] = {}
    assert not snapshot_health(lambda: snap)().healthy


# -- the real service -------------------------------------------------------------------------


class HangableEngine:
    """A real engine whose `infer` blocks on an event once `hang()` is called (a stuck driver call)."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.runtime = getattr(inner, "runtime", "?")
        self._hang = threading.Event()
        self._release = threading.Event()
        self.hung = threading.Event()

    def hang(self) -> None:
        self._hang.set()

    def release(self) -> None:
        self._release.set()

    def load(self) -> ModelInfo:
        return self.inner.load()

    def input_buffer(self) -> np.ndarray:
        return self.inner.input_buffer()

    def infer(self) -> np.ndarray:
        if self._hang.is_set():
            self.hung.set()
            self._release.wait()
        return self.inner.infer()

    def close(self) -> None:
        self.inner.close()


def service_config(model: Path, images: Path) -> Any:
    text = yaml.safe_dump(
        {
            "cameras": [
                {
                    "type": "replay",
                    "name": "cam",
                    "path": str(images),
                    "rate_ppm": 600,
                    "check_source_every_s": 0.1,
                    "reconnect_initial_s": 0.1,
                    "reconnect_max_s": 0.3,
                }
            ],
            "engine": {"type": "onnxruntime", "model": str(model), "intra_op_threads": 1, "warmup": 1},
            "pipeline": {"budget_ms": 500, "ring_slots": 8},
            "sinks": [],
            "metrics": {"port": 0},
        }
    )
    return parse_config(text, "<test>")


WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
STALE_S = 2.0  # a hang is a heartbeat this old: generous, a loaded 2-core runner must not look hung
OUTAGE_STALE_S = 10.0  # the outage test asserts the absence of UNHEALTHY: more generous still


def decided(service: Any) -> int:
    return sum(service.pipeline.stats.summary()["verdicts"].values())


def wait_until(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_service_is_ready_and_pings_only_while_the_inference_worker_makes_progress(
    model_path: Path, demo_images: Path, systemd_path: FakeSystemd
) -> None:
    service = build_service(service_config(model_path, demo_images))
    engine = HangableEngine(service.engine)
    service.pipeline.inspector.engine = engine
    watchdog = ServiceWatchdog(systemd_path.env(WATCHDOG_USEC), stale_after_s=STALE_S)
    service.start(serve_metrics=False)
    watchdog.start(service.snapshot)
    try:
        assert systemd_path.wait_for("READY", timeout=60), systemd_path.messages
        assert systemd_path.wait_for("WATCHDOG", 3, timeout=60), systemd_path.messages
        ready_at = next(i for i, m in enumerate(systemd_path.messages) if "READY" in m)
        first_ping = next(i for i, m in enumerate(systemd_path.messages) if "WATCHDOG" in m)
        assert ready_at <= first_ping
        assert wait_until(lambda: decided(service) >= 3, 60), "no frames decided"
        statuses = [m["STATUS"] for m in systemd_path.got("STATUS")]
        assert any("decided" in s for s in statuses)

        engine.hang()
        assert engine.hung.wait(30), "the worker never called the engine again"
        # once the worker's heartbeat is older than STALE_S the pings must stop for good
        assert wait_until(lambda: "UNHEALTHY" in systemd_path.got("STATUS")[-1]["STATUS"], 30), systemd_path.got(
            "STATUS"
        )[-1]
        assert "inference worker: no progress" in systemd_path.got("STATUS")[-1]["STATUS"]
        pings = systemd_path.count("WATCHDOG")
        time.sleep(4 * WATCHDOG_USEC / 1e6)  # systemd would have killed us by now
        assert systemd_path.count("WATCHDOG") == pings, "pinged while the inference worker was hung"
    finally:
        engine.release()
        watchdog.stop()
        service.stop()
    assert systemd_path.wait_for("STOPPING", timeout=10)


def test_a_camera_outage_alone_does_not_stop_the_pings(
    model_path: Path, demo_images: Path, tmp_path: Path, systemd_path: FakeSystemd
) -> None:
    folder = tmp_path / "line"
    shutil.copytree(demo_images, folder)
    service = build_service(service_config(model_path, folder))
    watchdog = ServiceWatchdog(systemd_path.env(WATCHDOG_USEC), stale_after_s=OUTAGE_STALE_S)
    service.start(serve_metrics=False)
    watchdog.start(service.snapshot)
    try:
        assert systemd_path.wait_for("READY", timeout=60)
        assert wait_until(lambda: decided(service) >= 2, 60)
        folder.rename(tmp_path / "unplugged")  # the camera goes away and stays away
        assert wait_until(lambda: "OUTAGE" in systemd_path.got("STATUS")[-1]["STATUS"], 30), systemd_path.got("STATUS")[
            -1
        ]
        pings = systemd_path.count("WATCHDOG")
        assert systemd_path.wait_for("WATCHDOG", pings + 4, timeout=30), "the pings stopped during a camera outage"
        assert "UNHEALTHY" not in systemd_path.got("STATUS")[-1]["STATUS"]
    finally:
        watchdog.stop()
        service.stop()


def test_edge_inspect_run_notifies_systemd(
    model_path: Path, demo_images: Path, tmp_path: Path, systemd_path: FakeSystemd
) -> None:
    """`edge-inspect run` itself, as the unit starts it: READY, pings, STOPPING at the end."""
    cfg = tmp_path / "station.yaml"
    data = yaml.safe_load(yaml.safe_dump(service_config(model_path, demo_images).app.model_dump(mode="json")))
    data["cameras"][0]["max_frames"] = 40  # 4 s at 600 parts/min, then the run ends on its own
    cfg.write_text(yaml.safe_dump(data))
    env = {**os.environ, **systemd_path.env(WATCHDOG_USEC)}
    env.pop("WATCHDOG_PID")  # systemd sets it to the service's pid; unset means "this process"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "run",
            "-c",
            str(cfg),
            "--no-status",
            "--summary-json",
            str(tmp_path / "summary.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert systemd_path.wait_for("STOPPING", timeout=10), systemd_path.messages
    keys = [k for m in systemd_path.messages for k in m]
    assert keys.index("READY") < keys.index("WATCHDOG") < keys.index("STOPPING")
    assert systemd_path.count("WATCHDOG") >= 2
    assert systemd_path.messages[0]["STATUS"].startswith("loading")
