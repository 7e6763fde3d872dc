"""Fixtures for the deployment tests: the compose file's broker, run by a real mosquitto."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[str]
    healthcheck: list[str]  # the compose healthcheck command, pointed at this broker's port
    output: str = ""


@pytest.fixture
def compose_broker(tmp_path: Path) -> Iterator[Broker]:
    """docker/mosquitto.conf in a real mosquitto on a free loopback port, healthy by the compose
    file's own healthcheck command."""
    broker = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if broker is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto / mosquitto-clients are not installed (scripts/setup.sh installs them)")
    port = free_port()
    conf = (DOCKER / "mosquitto.conf").read_text()
    assert "listener 1883" in conf and "/mosquitto/data/" in conf
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/broker-data/")
    (tmp_path / "broker-data").mkdir()
    (tmp_path / "mosquitto.conf").write_text(conf)
    test = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    probe = [a.replace("$$", "$") for a in test[1:]] + ["-p", str(port)]  # compose unescapes $$
    proc = subprocess.Popen(
        [broker, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    b = Broker(port, proc, probe)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the broker never passed the compose healthcheck (exit {proc.poll()})")
        yield b
    finally:
        if proc.poll() is None:
            proc.terminate()
            b.output, _ = proc.communicate(timeout=10)
