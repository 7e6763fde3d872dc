"""The container's station config, run by the real service on this host (no Docker engine here).

Its image paths are mapped onto the checkout (/opt/edge-inspect -> the checkout, which the
image holds as an editable install; /var/lib/edge-inspect -> a temp folder) and its ports onto free
loopback ports, its broker ("mosquitto") onto the compose file's mosquitto config run by a real
mosquitto; then `edge-inspect run` serves it, the Dockerfile's own HEALTHCHECK command is executed
against it as Docker would inside the container, and verdicts arrive on the broker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthcheck_command(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK\s.*?CMD\s+(\[.*\])\s*$", text, re.M)
    assert m, f"{dockerfile.name}: no exec-form HEALTHCHECK"
    cmd = json.loads(m.group(1))
    assert isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)
    return cmd


def container_config(tmp_path: Path, broker_port: int) -> tuple[Path, int]:
    text = (DOCKER / "station.yaml").read_text()
    text = text.replace("/opt/edge-inspect", str(REPO))  # the image's code and models: the checkout
    text = text.replace("/var/lib/edge-inspect", str(tmp_path / "state"))
    data = yaml.safe_load(text)
    web_port = free_port()
    data["web"].update(host="127.0.0.1", port=web_port)  # loopback only in tests
    data["metrics"].update(host="127.0.0.1", port=free_port())
    (mqtt,) = [sink for sink in data["sinks"] if sink["type"] == "mqtt"]
    assert mqtt["host"] == "mosquitto"  # the compose service name
    mqtt.update(host="127.0.0.1", port=broker_port)
    data["engine"].update(cache_file=str(tmp_path / "engine-choice.json"), probe_iterations=3)  # a short probe
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, web_port


def test_container_config_serves_and_passes_the_images_healthcheck(tmp_path: Path, compose_broker: Any) -> None:
    config, port = container_config(tmp_path, compose_broker.port)
    check = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "check", str(config)], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr
    url = f"http://127.0.0.1:{port}/healthz"
    env = {**os.environ, "EDGE_HEALTH_URL": url, "HOME": str(tmp_path)}
    cmd = healthcheck_command(DOCKER / "Dockerfile")
    assert cmd[0] == "python"
    probe = [sys.executable, *cmd[1:]]
    # nothing listens yet: the healthcheck must fail, not pass vacuously
    assert subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode != 0
    topic = "edge-inspect/docker-1/verdict"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(compose_broker.port), "-t", topic, "-C", "3", "-W", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--no-status"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            if subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        assert healthy, f"never healthy (exit {proc.poll()})"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200
        # the line runs: verdicts are written where the compose file keeps its volumes
        verdicts = tmp_path / "state" / "verdicts.jsonl"
        end = time.monotonic() + 60
        while time.monotonic() < end and (not verdicts.exists() or verdicts.stat().st_size == 0):
            time.sleep(0.2)
        assert verdicts.exists() and verdicts.stat().st_size > 0
        # and published to the compose file's broker
        published, _ = sub.communicate(timeout=150)
        assert sub.returncode == 0, "no verdicts on the broker"
        assert all(json.loads(line)["verdict"] in ("PASS", "REJECT", "FAILSAFE") for line in published.splitlines())
    finally:
        if sub.poll() is None:
            sub.kill()
        proc.send_signal(signal.SIGTERM)  # docker stop
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "state" / "audit" / "audit.sqlite").is_file()
    summary = json.loads(out)
    assert summary["frames_in"] > 0
