"""The compose file's broker config, run by a real mosquitto on a free loopback port, answers the
compose healthcheck command (a config mosquitto 2 refuses, or a healthcheck that never passes,
would leave the service waiting on `depends_on: service_healthy` forever)."""

from __future__ import annotations

import subprocess
from typing import Any


def test_broker_config_starts_and_passes_the_compose_healthcheck(compose_broker: Any) -> None:
    assert subprocess.run(compose_broker.healthcheck, capture_output=True, timeout=10).returncode == 0
    compose_broker.process.terminate()
    out, _ = compose_broker.process.communicate(timeout=10)
    # the config loaded and the listener opened (saving the store at exit may fail here: as root,
    # mosquitto drops to its own user, which cannot write pytest's private temp folder)
    assert "Config loaded" in out and f"listen socket on port {compose_broker.port}" in out, out
