"""The compose file's broker config, run by a real mosquitto on a free loopback port, answers the
compose healthcheck command (a config mosquitto 2 refuses, or a healthcheck that never passes,
would leave the service waiting on `depends_on: service_healthy` forever)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_broker_config_starts_and_passes_the_compose_healthcheck(tmp_path: Path) -> None:
    broker = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if broker is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto / mosquitto-clients are not installed (scripts/setup.sh installs them)")
    port = free_port()
    conf = (DOCKER / "mosquitto.conf").read_text()
    assert "listener 1883" in conf and "/mosquitto/data/" in conf
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/data/")
    (tmp_path / "data").mkdir()
    (tmp_path / "mosquitto.conf").write_text(conf)
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    probe = [a.replace("$$", "$") for a in test[1:]] + ["-p", str(port)]  # compose unescapes $$
    proc = subprocess.Popen([broker, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
                ok = True
                break
            time.sleep(0.2)
        assert ok, f"healthcheck never passed (broker exit {proc.poll()})"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    # the config loaded and the listener opened (saving the store at exit may fail here: as root,
    # mosquitto drops to its own user, which cannot write pytest's private temp folder)
    assert "Config loaded" in out and f"listen socket on port {port}" in out, out
