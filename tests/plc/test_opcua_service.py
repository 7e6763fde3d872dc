"""The OPC UA server inside a real service (replay camera, ONNX Runtime): a PLC client's Halt /
StartSingleJob / StartContinuous drive the pipeline itself, and the flat variables follow the verdicts;
the same with the server in a process of its own (`process: true`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from edge.app import build_service
from edge.config import parse_config
from edge.verdict import FailsafeReason, Verdict
from plc.machine_vision import NAMESPACE_URI
from plc.machine_vision.server import STATION_NS
from tests.plc.peers import free_port, make_client_pki


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "own-process"])
def test_plc_methods_drive_the_real_pipeline(
    model_path: Path, demo_images: Path, tmp_path: Path, process: bool
) -> None:
    port = free_port()
    pki = make_client_pki(tmp_path / "client", tmp_path / "pki" / "trusted")
    text = yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "cameras": [{"type": "replay", "name": "cam", "path": str(demo_images), "rate_ppm": 600, "loop": True}],
        "engine": {"type": "onnxruntime", "model": str(model_path), "intra_op_threads": 1, "warmup": 1},
        "pipeline": {"budget_ms": 3000, "ring_slots": 4},
        "sinks": [{"type": "opcua-server", "port": port, "station": "cell", "process": process,
                   "users": [{"name": "plc", "password": "plc-pw", "role": "operator"}]}],
        "metrics": {"port": 0},
    })
    svc = build_service(parse_config(text, "<opcua-service>", base_dir=tmp_path))
    got: list[Verdict] = []
    svc.pipeline.subscribe(lambda v, _f: got.append(v), "test")
    svc.start(serve_metrics=False)
    log: dict[str, Any] = {}

    async def scenario() -> None:
        c = Client(f"opc.tcp://127.0.0.1:{port}/edge-inspect", timeout=20, watchdog_intervall=30.0)
        c.application_uri = pki.uri
        await c.set_security(SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key),
                             mode=ua.MessageSecurityMode.SignAndEncrypt)
        c.set_user("plc")
        c.set_password("plc-pw")
        await c.connect()
        try:
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            sm = c.get_node(ua.NodeId(ua.String("VisionSystem.VisionStateMachine"), ua.Int16(ns)))
            am = c.get_node(ua.NodeId(ua.String("VisionSystem.VisionStateMachine.AutomaticModeStateMachine"),
                                      ua.Int16(ns)))

            def var(name: str) -> Any:
                return c.get_node(ua.NodeId(ua.String(f"Station.{name}"), ua.Int16(ns)))

            async def until(pred: Any, timeout: float = 60.0) -> bool:
                end = time.monotonic() + timeout
                while time.monotonic() < end:
                    if await pred():
                        return True
                    await asyncio.sleep(0.05)
                return False

            assert await until(lambda: _gt(var("Sequence"), 3))
            await sm.call_method(f"{mv}:Halt", ua.Variant(ua.Int32(0), ua.VariantType.Int32), "PLC stop")
            assert svc.pipeline.mode() == "halted"
            mark = svc.pipeline.stats.frames_in + 1  # frames after this one were admitted halted

            def after() -> list[Verdict]:
                return sorted((v for v in list(got) if v.frame_id > mark), key=lambda v: v.frame_id)

            assert await until(lambda: _async_true(len(after()) >= 3))  # frames keep coming while halted
            log["halted_reason"] = {v.failsafe_reason for v in after()}
            await asyncio.sleep(0.5)
            log["failsafe_flat"] = (await var("FailSafe").read_value(), await var("Ready").read_value())
            log["verdict_flat"] = await var("FailsafeReason").read_value()
            await sm.call_method(f"{mv}:Reset", ua.Variant(ua.Int32(0), ua.VariantType.Int32), "")
            args = [ua.MeasIdDataType(Id="m"), ua.PartIdDataType(Id="p"), ua.RecipeIdExternalDataType(Id=""),
                    ua.ProductIdDataType(Id=""), ua.Variant([], ua.VariantType.ExtensionObject)]
            await am.call_method(f"{mv}:StartContinuous", *args)
            assert svc.pipeline.mode() == "running"
            mark = svc.pipeline.stats.frames_in + 1
            assert await until(lambda: _async_true(len(after()) >= 3))
            log["running_reasons"] = {v.failsafe_reason for v in after()}
            log["sequence"] = await var("Sequence").read_value()
            log["health"] = next(h for h in svc.snapshot().sinks if h["name"] == "opcua-server")
        finally:
            await c.disconnect()

    try:
        svc.ioloop.run_sync(scenario(), timeout=240)
    finally:
        summary = svc.stop()
    print("opcua in the service:", log, summary.get("verdicts"))
    assert log["halted_reason"] == {FailsafeReason.HALTED}
    assert log["failsafe_flat"] == (True, False) and log["verdict_flat"] == "halted"
    assert FailsafeReason.HALTED not in log["running_reasons"]
    assert log["sequence"] >= 9
    health = log["health"]
    assert health["live"] and health["events"] >= 9 and health["written"] >= 9
    if process:  # the server's own process, and what it published came through it
        assert health["process"]["pid"] and health["process"]["restarts"] == 0


async def _gt(node: Any, n: int) -> bool:
    return int(await node.read_value()) > n


async def _async_true(value: bool) -> bool:
    return value
