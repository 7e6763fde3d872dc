"""Fixtures for the PLC-bridge tests (helpers in tests/plc/peers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.ioloop import IoLoop
from tests.plc.peers import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def ioloop() -> Iterator[IoLoop]:
    """An I/O loop in its own thread (the service's kind), for OPC UA servers and clients."""
    loop = IoLoop("test-io")
    loop.start()
    yield loop
    loop.stop()
