"""ConfigurationManagement (decision sets), ResultManagement (recent results) and events through the
Server object, against real asyncua clients on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from asyncua.ua.uaerrors import UaError

from edge.app import build_service
from edge.config import parse_config
from edge.errors import ConfigError
from edge.ioloop import IoLoop
from plc.machine_vision import NAMESPACE_URI, RESULT_READY_EVENT_TYPE
from plc.machine_vision.server import STATION_NS
from tests.plc.peers import RecordingControl, free_port, make_client_pki, make_verdict
from tests.plc.test_opcua_server import Collector, client, start_server, wait_for


class SetsControl(RecordingControl):
    """RecordingControl with the decision sets and change listeners of `edge.control.ServiceControl`."""

    def __init__(self) -> None:
        super().__init__()
        self._set = "default"
        self.listeners: list[Any] = []

    def decision_sets(self) -> list[str]:
        return ["default", "loose", "strict"]

    def active_decision_set(self) -> str:
        return self._set

    def activate_decision_set(self, name: str, who: str = "system") -> dict[str, Any]:
        if name not in self.decision_sets():
            raise ConfigError(f"unknown decision set {name!r}")
        before, self._set = self._set, name
        self.calls.append((f"set:{name}", who))
        for fn in self.listeners:
            fn("decision_set", before, name, who)
        return {}

    def on_change(self, fn: Any) -> None:
        self.listeners.append(fn)


def u32(n: int) -> ua.Variant:
    return ua.Variant(n, ua.VariantType.UInt32)


def i32(n: int) -> ua.Variant:
    return ua.Variant(n, ua.VariantType.Int32)


def test_configuration_management_maps_onto_decision_sets(tmp_path: Path, ioloop: IoLoop) -> None:
    control = SetsControl()
    sink = start_server(tmp_path, ioloop, control, heartbeat_s=60.0)  # no beat refreshes anything here
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)

    async def scenario() -> None:
        async with client(sink, pki, "op", "op-pw") as c:
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            cm = c.get_node(ua.NodeId("VisionSystem.ConfigurationManagement", ns))
            active = await cm.get_child(f"{mv}:ActiveConfiguration")
            flat = c.get_node(ua.NodeId("Station.DecisionSet", ns))

            def cid(name: str) -> Any:
                return ua.ConfigurationIdDataType(Id=name)

            complete, count, handle, configs, err = await cm.call_method(
                f"{mv}:GetConfigurationList", u32(0), u32(0), i32(0)
            )
            assert (complete, count, err) == (True, 3, 0) and handle > 0
            assert [x.InternalId.Id for x in configs] == ["default", "loose", "strict"]
            assert all(x.LastModified.year >= 2024 for x in configs)
            page = await cm.call_method(f"{mv}:GetConfigurationList", u32(2), u32(1), i32(0))
            assert page[0] is True and [x.InternalId.Id for x in page[3]] == ["loose", "strict"]
            page = await cm.call_method(f"{mv}:GetConfigurationList", u32(1), u32(0), i32(0))
            assert page[0] is False and page[1] == 1 and page[3][0].InternalId.Id == "default"
            h, config, err = await cm.call_method(f"{mv}:GetConfigurationById", cid("strict"), i32(0))
            assert config.InternalId.Id == "strict" and err == 0 and h not in (0, handle)
            with pytest.raises(UaError, match="BadNotFound"):
                await cm.call_method(f"{mv}:GetConfigurationById", cid("nope"), i32(0))
            assert await cm.call_method(f"{mv}:ReleaseConfigurationHandle", u32(h)) == 0
            with pytest.raises(UaError, match="BadInvalidArgument"):  # released already
                await cm.call_method(f"{mv}:ReleaseConfigurationHandle", u32(h))

            assert (await active.read_value()).InternalId.Id == "default"
            assert await flat.read_value() == "default"
            assert await cm.call_method(f"{mv}:ActivateConfiguration", cid("loose")) == 0
            assert control.active_decision_set() == "loose"
            assert await flat.read_value() == "loose"
            assert (await active.read_value()).InternalId.Id == "loose"
            with pytest.raises(UaError, match="BadNotFound"):
                await cm.call_method(f"{mv}:ActivateConfiguration", cid("nope"))
            for name in ("AddConfiguration", "RemoveConfiguration"):
                with pytest.raises(UaError, match="BadNotSupported"):
                    await cm.call_method(f"{mv}:{name}", cid("new"))

            # a change made elsewhere (the web API) shows at once, long before the next heartbeat
            col = Collector()
            sub = await c.create_subscription(10, col)
            col.names[flat.nodeid] = "DecisionSet"
            await sub.subscribe_data_change(flat)
            await asyncio.to_thread(control.activate_decision_set, "strict", "api")
            assert await wait_for(lambda: ("DecisionSet", "strict") in col.changes, timeout=5)
            assert (await active.read_value()).InternalId.Id == "strict"
            await sub.delete()

        async with client(sink, pki, "viewer", "v-pw") as c:  # read-only: lists and lookups, no changes
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            cm = c.get_node(ua.NodeId("VisionSystem.ConfigurationManagement", ns))
            with pytest.raises(UaError, match="BadUserAccessDenied"):
                await cm.call_method(f"{mv}:ActivateConfiguration", ua.ConfigurationIdDataType(Id="default"))
            h, config, err = await cm.call_method(
                f"{mv}:GetConfigurationById", ua.ConfigurationIdDataType(Id="loose"), i32(0)
            )
            assert err == 0 and h > 0
            assert await cm.call_method(f"{mv}:ReleaseConfigurationHandle", u32(h)) == 0
            rm = c.get_node(ua.NodeId("VisionSystem.RecipeManagement", ns))
            with pytest.raises(UaError, match="BadUserAccessDenied"):
                await rm.call_method(
                    f"{mv}:PrepareRecipe",
                    ua.RecipeIdExternalDataType(Id="default"),
                    ua.RecipeIdInternalDataType(Id=""),
                )
            assert await c.get_node(ua.NodeId("Station.DecisionSet", ns)).read_value() == "strict"

    try:
        ioloop.run_sync(scenario(), timeout=120)
        assert control.calls == [("set:loose", "opcua:ActivateConfiguration"), ("set:strict", "api")]
    finally:
        sink.close()


def test_result_management_answers_from_the_recent_results(tmp_path: Path, ioloop: IoLoop) -> None:
    control = SetsControl()
    sink = start_server(tmp_path, ioloop, control, result_store_size=3)
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)
    verdicts = [make_verdict(i, "REJECT" if i % 2 else "PASS") for i in range(5)]

    async def scenario() -> None:
        async with client(sink, pki, "op", "op-pw") as c:
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            rm = c.get_node(ua.NodeId("VisionSystem.ResultManagement", ns))
            seq = c.get_node(ua.NodeId("Station.Sequence", ns))
            for v in verdicts:
                assert sink.submit(v)
            for _ in range(200):
                if await seq.read_value() == 5:
                    break
                await asyncio.sleep(0.05)

            def rid(v: Any) -> Any:
                return ua.ResultIdDataType(Id=v.result_id)

            last = verdicts[-1]
            handle, result, err = await rm.call_method(f"{mv}:GetResultById", rid(last), i32(0))
            assert err == 0 and handle > 0
            assert result.ResultId.Id == last.result_id and result.PartId.Id == last.part_id
            assert result.MeasId.Id == str(last.frame_id) and result.ResultState == 1
            assert result.InternalConfigurationId.Id == "default" and result.ExternalConfigurationId.Id == "test"
            assert result.InternalRecipeId.Id == "default" and result.JobId.Id == "job-0"
            assert abs(result.CreationTime.timestamp() * 1e9 - last.decided_wall_ns) < 1e6
            assert [x.Value for x in result.ResultContent][0] == "PASS"
            assert result.ProcessingTimes.StartTime <= result.ProcessingTimes.EndTime
            for gone in (rid(verdicts[0]), ua.ResultIdDataType(Id="no-such-result")):  # evicted (3 kept), unknown
                with pytest.raises(UaError, match="BadNotFound"):
                    await rm.call_method(f"{mv}:GetResultById", gone, i32(0))
            empty = [
                ua.MeasIdDataType(Id=""),
                ua.PartIdDataType(Id=""),
                ua.RecipeIdExternalDataType(Id=""),
                ua.RecipeIdInternalDataType(Id=""),
                ua.ConfigurationIdDataType(Id=""),
                ua.ConfigurationIdDataType(Id=""),
                ua.ProductIdDataType(Id=""),
                ua.JobIdDataType(Id=""),
            ]
            complete, count, h2, items, err = await rm.call_method(
                f"{mv}:GetResultListFiltered", i32(2), *empty, u32(0), u32(0), i32(0)
            )
            assert complete and count == 1 and [r.ResultId.Id for r in items] == [verdicts[3].result_id]
            out = await rm.call_method(f"{mv}:GetResultListFiltered", i32(0), *empty, u32(2), u32(0), i32(0))
            assert out[0] is False and [r.PartId.Id for r in out[3]] == ["part-00004", "part-00003"]
            assert await rm.call_method(f"{mv}:ReleaseResultHandle", u32(h2)) == 0
            with pytest.raises(UaError, match="BadInvalidArgument"):
                await rm.call_method(f"{mv}:ReleaseResultHandle", u32(h2))
            with pytest.raises(UaError, match="BadNotSupported"):
                await rm.call_method(f"{mv}:GetResultComponentsById", rid(last), i32(0))

        async with client(sink, pki, "viewer", "v-pw") as c:  # read-only: reading results is allowed
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            rm = c.get_node(ua.NodeId("VisionSystem.ResultManagement", await c.get_namespace_index(STATION_NS)))
            handle, result, err = await rm.call_method(
                f"{mv}:GetResultById", ua.ResultIdDataType(Id=last.result_id), i32(0)
            )
            assert err == 0 and result.ResultId.Id == last.result_id
            assert await rm.call_method(f"{mv}:ReleaseResultHandle", u32(handle)) == 0

    try:
        ioloop.run_sync(scenario(), timeout=120)
    finally:
        sink.close()


def test_result_events_reach_clients_subscribed_at_the_server_object(tmp_path: Path, ioloop: IoLoop) -> None:
    sink = start_server(tmp_path, ioloop, SetsControl())
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)
    verdicts = [make_verdict(0, "PASS"), make_verdict(1, "REJECT")]

    async def scenario() -> None:
        async with client(sink, pki, "viewer", "v-pw") as c:
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            vs = c.get_node(ua.NodeId("VisionSystem", ns))
            notified = await c.nodes.server.get_referenced_nodes(ua.ObjectIds.HasNotifier)
            assert vs.nodeid in [n.nodeid for n in notified]  # browsable: Server -> VisionSystem
            at_server, at_vs = Collector(), Collector()
            evtype = c.get_node(ua.NodeId(RESULT_READY_EVENT_TYPE, mv))
            sub1 = await c.create_subscription(10, at_server)
            await sub1.subscribe_events(c.nodes.server, evtype)  # i=2253, as UaExpert's event view does
            sub2 = await c.create_subscription(10, at_vs)
            await sub2.subscribe_events(vs, evtype)
            await asyncio.sleep(0.3)
            for v in verdicts:
                assert sink.submit(v)
            assert await wait_for(lambda: len(at_server.events) == 2 and len(at_vs.events) == 2)
            assert [e.ResultId.Id for e in at_server.events] == [v.result_id for v in verdicts]
            assert [e.ResultState for e in at_server.events] == [1, 2]
            assert [e.EventId for e in at_server.events] == [e.EventId for e in at_vs.events]  # one event each
            assert all(e.SourceNode == vs.nodeid for e in at_server.events)
            assert at_server.events[1].InternalConfigurationId.Id == "default"
            await sub1.delete()
            await sub2.delete()

    try:
        ioloop.run_sync(scenario(), timeout=120)
    finally:
        sink.close()


def test_activate_configuration_drives_the_real_service(model_path: Path, demo_images: Path, tmp_path: Path) -> None:
    port = free_port()
    pki = make_client_pki(tmp_path / "client", tmp_path / "pki" / "trusted")
    sets = {"loose": {"min_confidence": 0.95}, "strict": {"min_confidence": 0.1}}
    text = yaml.safe_dump(
        {
            "state_dir": str(tmp_path / "state"),
            "cameras": [{"type": "replay", "name": "cam", "path": str(demo_images), "rate_ppm": 600, "loop": True}],
            "engine": {"type": "onnxruntime", "model": str(model_path), "intra_op_threads": 1, "warmup": 1},
            "pipeline": {"budget_ms": 3000, "ring_slots": 4},
            "decision_sets": sets,
            "sinks": [
                {
                    "type": "opcua-server",
                    "port": port,
                    "station": "cell",
                    "heartbeat_s": 60,
                    "users": [{"name": "plc", "password": "plc-pw", "role": "operator"}],
                }
            ],
            "metrics": {"port": 0},
        }
    )
    svc = build_service(parse_config(text, "<opcua-sets>", base_dir=tmp_path))
    ctl = svc.control
    assert ctl is not None
    svc.start(serve_metrics=False)

    async def scenario() -> None:
        c = Client(f"opc.tcp://127.0.0.1:{port}/edge-inspect", timeout=20, watchdog_intervall=30.0)
        c.application_uri = pki.uri
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        await c.set_security(
            SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key), mode=ua.MessageSecurityMode.SignAndEncrypt
        )
        c.set_user("plc")
        c.set_password("plc-pw")
        await c.connect()
        try:
            await c.load_data_type_definitions()
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            cm = c.get_node(ua.NodeId(ua.String("VisionSystem.ConfigurationManagement"), ua.Int16(ns)))
            flat = c.get_node(ua.NodeId(ua.String("Station.DecisionSet"), ua.Int16(ns)))
            out = await cm.call_method(f"{mv}:GetConfigurationList", u32(0), u32(0), i32(0))
            assert [x.InternalId.Id for x in out[3]] == ["default", "loose", "strict"]
            await cm.call_method(f"{mv}:ActivateConfiguration", ua.ConfigurationIdDataType(Id="loose"))
            assert ctl.active_decision_set() == "loose" and ctl.decision()["min_confidence"] == 0.95
            assert await flat.read_value() == "loose"
            await asyncio.to_thread(ctl.set_decision, {"min_confidence": 0.5}, "api token:anna")  # the web API's path
            assert await wait_for_value(flat, "custom")
        finally:
            await c.disconnect()

    try:
        svc.ioloop.run_sync(scenario(), timeout=240)
    finally:
        svc.stop()


async def wait_for_value(node: Any, value: Any, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if await node.read_value() == value:
            return True
        await asyncio.sleep(0.05)
    return False
