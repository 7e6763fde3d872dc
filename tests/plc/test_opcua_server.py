"""The OPC UA server against real asyncua clients on loopback: events, data changes, methods, security."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError

from edge.ioloop import IoLoop
from plc.machine_vision import NAMESPACE_URI, RESULT_READY_EVENT_TYPE
from plc.machine_vision.server import STATION_NS
from plc.opcua_server import OpcUaServerSink, OpcUaServerSinkConfig
from tests.plc.peers import ClientPki, RecordingControl, free_port, make_client_pki, make_verdict

USERS = [
    {"name": "viewer", "password": "v-pw", "role": "read-only"},
    {"name": "op", "password": "op-pw", "role": "operator"},
    {"name": "eng", "password": "eng-pw", "role": "engineer"},
]


def start_server(tmp_path: Path, ioloop: IoLoop, control: Any = None, **cfg: Any) -> OpcUaServerSink:
    base: dict[str, Any] = {"type": "opcua-server", "port": free_port(), "users": USERS, "heartbeat_s": 0.2}
    base.update(cfg)
    sink = OpcUaServerSinkConfig.model_validate(base).build(tmp_path / "srv")
    sink.use(ioloop, control)
    sink.start()
    return sink


@asynccontextmanager
async def client(
    sink: OpcUaServerSink,
    pki: ClientPki | None,
    user: str | None,
    password: str | None = None,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> AsyncIterator[Client]:
    c = Client(sink.endpoint, timeout=10)
    if pki is not None:
        c.application_uri = pki.uri
        await c.set_security(SecurityPolicyBasic256Sha256, str(pki.cert), str(pki.key), mode=mode)
    if user is not None:
        c.set_user(user)
        c.set_password(password or "")
    await c.connect()
    try:
        yield c
    finally:
        await c.disconnect()


class Collector:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.changes: list[tuple[str, Any]] = []
        self.names: dict[Any, str] = {}

    def event_notification(self, event: Any) -> None:
        self.events.append(event)

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.changes.append((self.names.get(node.nodeid, "?"), val))


async def wait_for(pred: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return bool(pred())


def test_events_and_data_changes_carry_every_field(tmp_path: Path, ioloop: IoLoop) -> None:
    sink = start_server(tmp_path, ioloop, RecordingControl())
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)
    verdicts = [
        make_verdict(0, "PASS"),
        make_verdict(1, "REJECT"),
        make_verdict(2, "FAILSAFE"),
        make_verdict(3, "REJECT", decided_after_ms=300.0),  # decided after its 250 ms deadline
    ]

    async def scenario() -> None:
        async with client(sink, pki, "viewer", "v-pw") as c:
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            await c.load_data_type_definitions()
            vs = c.get_node(ua.NodeId("VisionSystem", ns))
            col = Collector()
            sub = await c.create_subscription(10, col)
            await sub.subscribe_events(vs, c.get_node(ua.NodeId(RESULT_READY_EVENT_TYPE, mv)))
            flat = ["Sequence", "VerdictCode", "PartId", "ResultId", "Late"]
            nodes = [c.get_node(ua.NodeId(f"Station.{n}", ns)) for n in flat]
            for n, name in zip(nodes, flat, strict=True):
                col.names[n.nodeid] = name
            await sub.subscribe_data_change(nodes)
            await asyncio.sleep(0.5)
            for v in verdicts:
                assert sink.submit(v)
                await asyncio.sleep(0.05)  # one publishing interval apart: each value change is seen
            assert await wait_for(lambda: len(col.events) == 4), f"events: {len(col.events)}"
            assert await wait_for(lambda: [v for n, v in col.changes if n == "Sequence"][-1:] == [4])
            for ev, v in zip(col.events, verdicts, strict=True):
                rec = v.to_dict()
                assert ev.ResultId.Id == v.result_id
                assert ev.PartId.Id == v.part_id
                assert ev.MeasId.Id == str(v.frame_id)
                assert ev.JobId.Id.startswith("job-")
                assert ev.ResultState == {"PASS": 1, "REJECT": 2, "FAILSAFE": 3}[v.verdict.value]
                assert abs(ev.CreationTime.timestamp() * 1e9 - v.decided_wall_ns) < 1e6
                pt = ev.ProcessingTimes
                assert pt.StartTime <= pt.EndTime and pt.ProcessingDuration >= 0 and pt.AcquisitionDuration >= 0
                content = [x.Value for x in ev.ResultContent]  # BaseDataType[]: an array of Variants
                assert content[0] == v.verdict.value
                assert content[1] == (rec["failsafe_reason"] or "")
                assert '"rule"' in content[2] or v.verdict.value == "PASS"
                if v.verdict.value == "REJECT":
                    assert '"class":"short"' in content[3]
                assert ev.IsPartial is False and ev.Severity >= 100
            assert "LATE" in col.events[3].Message.Text and "LATE" not in col.events[1].Message.Text
            seqs = [v for n, v in col.changes if n == "Sequence"]
            assert seqs == sorted(seqs) and seqs[-1] == 4
            # the flat variables hold the last verdict
            last = verdicts[-1]
            read = {n: await c.get_node(ua.NodeId(f"Station.{n}", ns)).read_value() for n in (
                "VerdictCode", "Verdict", "PartId", "ResultId", "Sequence", "PassCount", "RejectCount",
                "FailsafeCount", "Late", "MarginMs", "DeadlineTime", "Ready", "FailSafe", "Mode", "Camera")}
            assert read["VerdictCode"] == 2 and read["Verdict"] == "REJECT"
            assert read["PartId"] == last.part_id and read["ResultId"] == last.result_id
            assert (read["Sequence"], read["PassCount"], read["RejectCount"], read["FailsafeCount"]) == (4, 1, 2, 1)
            assert read["Late"] is True and read["MarginMs"] < 0
            assert read["Ready"] is True and read["FailSafe"] is False and read["Mode"] == "running"
            assert read["Camera"] == "line1"
            hb = c.get_node(ua.NodeId("Station.Heartbeat", ns))
            h1 = await hb.read_value()
            end = time.monotonic() + 10
            while await hb.read_value() <= h1 and time.monotonic() < end:  # the heartbeat advances
                await asyncio.sleep(0.1)
            assert await hb.read_value() > h1
            await sub.delete()

    try:
        ioloop.run_sync(scenario(), timeout=120)
        h = sink.health()
        assert h["written"] == 4 and h["events"] == 4 and h["dropped"] == 0 and h["live"]
    finally:
        sink.close()


def test_state_machine_and_recipes_drive_the_service(tmp_path: Path, ioloop: IoLoop) -> None:
    control = RecordingControl()
    sink = start_server(tmp_path, ioloop, control)
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)

    async def scenario() -> None:
        async with client(sink, pki, "eng", "eng-pw") as c:
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            await c.load_data_type_definitions()
            sm = c.get_node(ua.NodeId("VisionSystem.VisionStateMachine", ns))
            am = c.get_node(ua.NodeId("VisionSystem.VisionStateMachine.AutomaticModeStateMachine", ns))
            rm = c.get_node(ua.NodeId("VisionSystem.RecipeManagement", ns))

            async def states() -> tuple[str, str]:
                main = await (await sm.get_child("0:CurrentState")).read_value()
                auto = await (await am.get_child("0:CurrentState")).read_value()
                return main.Text, auto.Text

            assert await states() == ("Operational", "ContinuousExecution")
            await sm.call_method(f"{mv}:Halt", ua.Variant(0, ua.VariantType.Int32), "operator stop")
            assert await states() == ("Halted", "Initialized") and control.mode() == "halted"
            ready = c.get_node(ua.NodeId("Station.Ready", ns))
            assert await ready.read_value() is False
            with pytest.raises(UaError, match="BadInvalidState"):
                await am.call_method(f"{mv}:StartContinuous", *_start_args())
            await sm.call_method(f"{mv}:Reset", ua.Variant(0, ua.VariantType.Int32), "")
            assert await states() == ("Operational", "Ready")
            job, err = await am.call_method(f"{mv}:StartContinuous", *_start_args())
            assert err == 0 and job.Id == "job-1" and control.mode() == "running"
            assert await states() == ("Operational", "ContinuousExecution")
            job, err = await am.call_method(f"{mv}:StartSingleJob", *_start_args())
            assert job.Id == "job-2" and control.mode() == "single"
            assert await states() == ("Operational", "SingleExecution")
            await am.call_method(f"{mv}:Stop", ua.Variant(0, ua.VariantType.Int32), "")
            assert await states() == ("Operational", "Ready") and control.mode() == "halted"
            # recipes
            out = await rm.call_method(f"{mv}:GetRecipeListFiltered", *_recipe_filter())
            assert [r.Id for r in out[3]] == ["default", "boards-v2"]
            ext = ua.RecipeIdExternalDataType(Id="boards-v2")
            empty = ua.RecipeIdInternalDataType(Id="")
            internal_out, done, err = await rm.call_method(f"{mv}:PrepareRecipe", ext, empty)
            assert internal_out.Id == "boards-v2" and done and err == 0 and control.active_recipe() == "boards-v2"
            recipe = c.get_node(ua.NodeId("Station.Recipe", ns))
            assert await recipe.read_value() == "boards-v2"
            with pytest.raises(UaError, match="BadInvalidArgument"):
                await rm.call_method(f"{mv}:PrepareRecipe", ua.RecipeIdExternalDataType(Id="nope"),
                                     ua.RecipeIdInternalDataType(Id=""))

    try:
        ioloop.run_sync(scenario(), timeout=120)
        assert [c for c, _ in control.calls] == ["halt", "resume", "single:1", "halt", "recipe:boards-v2"]
        assert all(who.startswith("opcua") for _, who in control.calls)
    finally:
        sink.close()


def _start_args() -> list[Any]:
    return [
        ua.MeasIdDataType(Id="m1"),
        ua.PartIdDataType(Id="p1"),
        ua.RecipeIdExternalDataType(Id=""),
        ua.ProductIdDataType(Id=""),
        ua.Variant([], ua.VariantType.ExtensionObject),
    ]


def _recipe_filter() -> list[Any]:
    return [
        ua.RecipeIdExternalDataType(Id=""),
        ua.ProductIdDataType(Id=""),
        ua.Variant(0, ua.VariantType.Int32),  # TriStateBooleanDataType: don't care
        ua.Variant(0, ua.VariantType.UInt32),
        ua.Variant(0, ua.VariantType.UInt32),
        ua.Variant(0, ua.VariantType.Int32),
    ]


def test_security_refusals_and_roles(tmp_path: Path, ioloop: IoLoop) -> None:
    control = RecordingControl()
    sink = start_server(tmp_path, ioloop, control)
    pki = make_client_pki(tmp_path / "client", sink.trusted_dir)
    stranger = make_client_pki(tmp_path / "stranger", None, uri="urn:edge-inspect:stranger")
    outcomes: dict[str, str] = {}

    async def refused(what: str, **kw: Any) -> None:
        try:
            async with client(sink, **kw):
                outcomes[what] = "connected"
        except Exception as exc:  # asyncua raises its status-code errors or times out the channel
            outcomes[what] = type(exc).__name__

    async def scenario() -> None:
        await refused("anonymous", pki=pki, user=None)
        await refused("wrong password", pki=pki, user="op", password="nope")
        await refused("unknown user", pki=pki, user="mallory", password="x")
        await refused("untrusted certificate", pki=stranger, user="eng", password="eng-pw")
        await refused("unsecured", pki=None, user="eng", password="eng-pw")
        mv_ns: dict[str, int] = {}
        # Sign only works too, and roles are enforced per request
        async with client(sink, pki, "viewer", "v-pw", mode=ua.MessageSecurityMode.Sign) as c:
            mv_ns["mv"] = mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            sm = c.get_node(ua.NodeId("VisionSystem.VisionStateMachine", ns))
            assert await c.get_node(ua.NodeId("Station.Mode", ns)).read_value() == "running"
            with pytest.raises(UaError, match="BadUserAccessDenied"):
                await sm.call_method(f"{mv}:Halt", ua.Variant(0, ua.VariantType.Int32), "")
            with pytest.raises(UaError):
                await c.get_node(ua.NodeId("Station.VerdictCode", ns)).write_value(ua.Variant(2, ua.VariantType.Int32))
        async with client(sink, pki, "op", "op-pw") as c:
            await c.load_data_type_definitions()
            mv = mv_ns["mv"]
            ns = await c.get_namespace_index(STATION_NS)
            sm = c.get_node(ua.NodeId("VisionSystem.VisionStateMachine", ns))
            rm = c.get_node(ua.NodeId("VisionSystem.RecipeManagement", ns))
            await sm.call_method(f"{mv}:Halt", ua.Variant(0, ua.VariantType.Int32), "")  # operator may
            with pytest.raises(UaError, match="BadUserAccessDenied"):  # but not change recipes
                await rm.call_method(f"{mv}:PrepareRecipe", ua.RecipeIdExternalDataType(Id="boards-v2"),
                                     ua.RecipeIdInternalDataType(Id=""))

    try:
        ioloop.run_sync(scenario(), timeout=180)
        print("security outcomes:", outcomes)
        assert outcomes == {
            "anonymous": "BadIdentityTokenRejected",
            "wrong password": "BadUserAccessDenied",
            "unknown user": "BadUserAccessDenied",
            "untrusted certificate": "BadCertificateUntrusted",
            "unsecured": "UaError",  # the server offers no None-security endpoint to match
        }, outcomes
        assert [c for c, _ in control.calls] == ["halt"]
        h = sink.health()
        assert h["logins_refused"] >= 2 and h["requests_denied"] >= 3 and h["certificates_refused"] >= 1
    finally:
        sink.close()


def test_anonymous_read_only_and_unsecured_when_configured(tmp_path: Path, ioloop: IoLoop) -> None:
    control = RecordingControl()
    sink = start_server(tmp_path, ioloop, control, allow_anonymous=True, allow_unsecured=True)

    async def scenario() -> None:
        async with client(sink, None, None) as c:  # no certificate, no user: allowed here, read-only
            mv = await c.get_namespace_index(NAMESPACE_URI)
            ns = await c.get_namespace_index(STATION_NS)
            assert await c.get_node(ua.NodeId("Station.FailSafe", ns)).read_value() is False
            sm = c.get_node(ua.NodeId("VisionSystem.VisionStateMachine", ns))
            with pytest.raises(UaError, match="BadUserAccessDenied"):
                await sm.call_method(f"{mv}:Halt", ua.Variant(0, ua.VariantType.Int32), "")

    try:
        ioloop.run_sync(scenario(), timeout=120)
        assert control.calls == []
    finally:
        sink.close()
