"""The OPC UA server in a process of its own (`process: true`, plc.opcua_process): verdicts reach a
client through it, a server process that dies is reported and started again, a service that stops
sending its state makes the station not Ready, and closing the service ends the server's process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from asyncua import ua

from edge.ioloop import IoLoop
from plc.machine_vision.server import STATION_NS
from plc.opcua_process import OpcUaServerProcess
from plc.opcua_server import OpcUaServerSinkConfig
from tests.plc.peers import RecordingControl, free_port, make_verdict, wait_until
from tests.plc.test_opcua_server import client


def start(tmp_path: Path, control: Any, ready: Any = None) -> OpcUaServerProcess:
    cfg = {"type": "opcua-server", "port": free_port(), "heartbeat_s": 0.2, "max_heartbeat_age_s": 0.5,
           "process": True, "allow_anonymous": True, "allow_unsecured": True}
    sink = OpcUaServerSinkConfig.model_validate(cfg).build(tmp_path / "srv")
    assert isinstance(sink, OpcUaServerProcess)
    sink.use(control, ready)
    sink.start()
    return sink


async def read(sink: OpcUaServerProcess, *names: str) -> list[Any]:
    async with client(sink, None, None) as c:  # type: ignore[arg-type]
        ns = await c.get_namespace_index(STATION_NS)
        return [await c.get_node(ua.NodeId(f"Station.{n}", ns)).read_value() for n in names]


def test_verdicts_through_the_server_process_which_is_restarted_when_it_dies(tmp_path: Path, ioloop: IoLoop) -> None:
    sink = start(tmp_path, RecordingControl())
    try:
        for i in range(3):
            assert sink.submit(make_verdict(i, "REJECT", budget_ms=5000))
        assert wait_until(lambda: sink.health().get("written") == 3, 20)
        seq, rejects, mode = ioloop.run_sync(read(sink, "Sequence", "RejectCount", "Mode"), timeout=60)
        assert (seq, rejects, mode) == (3, 3, "running")
        first = sink.health()["process"]["pid"]
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: not sink.health()["live"], 10)
        assert "exited" in str(sink.health()["last_error"])
        assert wait_until(lambda: sink.health()["process"]["restarts"] == 1 and sink.health()["live"], 60)
        assert sink.health()["process"]["pid"] != first
        assert sink.submit(make_verdict(9, "PASS", budget_ms=5000))
        assert wait_until(lambda: sink.health().get("written") == 1, 20)  # a new server: its own counts
        (seq,) = ioloop.run_sync(read(sink, "Sequence"), timeout=60)
        assert seq == 1
    finally:
        sink.close()


def test_a_silent_service_makes_the_station_not_ready_and_close_ends_the_process(
    tmp_path: Path, ioloop: IoLoop
) -> None:
    sink = start(tmp_path, RecordingControl())
    proc = sink._proc
    try:
        assert wait_until(lambda: ioloop.run_sync(read(sink, "Ready"), timeout=30) == [True], 20)
        beat0 = ioloop.run_sync(read(sink, "Heartbeat"), timeout=30)[0]
        sink._stop.set()  # the service's state stops coming (as when the service hangs)
        assert wait_until(lambda: ioloop.run_sync(read(sink, "Ready", "FailSafe"), timeout=30) == [False, True], 20)
        beat1 = ioloop.run_sync(read(sink, "Heartbeat"), timeout=30)[0]
        time.sleep(1.0)
        assert ioloop.run_sync(read(sink, "Heartbeat"), timeout=30)[0] == beat1 >= beat0  # stopped
    finally:
        sink.close()
    assert proc is not None and not proc.is_alive()  # the service's end closed: the server process ended
