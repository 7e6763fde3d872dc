"""The station's OPC UA server (asyncua), modelled on the Machine Vision companion specification.

Address space (all types standard or from the vendored NodeSet; the station's own namespace is
``urn:edge-inspect:station``, string NodeIds, listed in docs/PLC.md):

- ``VisionSystem`` (``VisionSystemType``): its VisionStateMachine and AutomaticModeStateMachine
  follow the service's mode; Halt/Reset/StartSingleJob/StartContinuous/Stop/Abort drive it
  (`ServiceControl` halt/resume/single); RecipeManagement's PrepareRecipe/UnprepareRecipe/
  GetRecipeListFiltered map onto the configured recipes; ConfigurationManagement onto the decision
  sets and ResultManagement onto the most recent results (`plc.machine_vision.management`). It
  emits one ``ResultReadyEventType`` event per verdict, also seen through the Server object.
- ``Station``: flat variables for PLCs that cannot consume events (verdict code, part id,
  result id, sequence, counters, heartbeat, ready, fail-safe, deadline and margin, recipe and
  decision set).

Everything here runs on the service's I/O loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncua import Node, Server, ua

from plc.machine_vision import NAMESPACE_URI, RESULT_READY_EVENT_TYPE, VISION_SYSTEM_TYPE, nodeid_table, nodeset_path
from plc.machine_vision.management import ConfigurationManagement, DecisionSets, ResultManagement
from plc.machine_vision.result_model import Counters, ResultFields, VisionStates, result_fields, vision_states

log = logging.getLogger(__name__)

STATION_NS = "urn:edge-inspect:station"
_UNSET = object()


class Control(Protocol):
    """What the server needs of `edge.control.ServiceControl`."""

    def mode(self) -> str: ...

    def halt(self, who: str = ...) -> None: ...

    def resume(self, who: str = ...) -> None: ...

    def single(self, n: int = ..., who: str = ...) -> None: ...

    def recipes(self) -> list[str]: ...

    def active_recipe(self) -> str: ...

    def activate_recipe(self, name: str, who: str = ...) -> str: ...


# name, OPC UA type, initial value
FLAT_VARIABLES: tuple[tuple[str, ua.VariantType, Any], ...] = (
    ("VerdictCode", ua.VariantType.Int32, 0),
    ("Verdict", ua.VariantType.String, ""),
    ("PartId", ua.VariantType.String, ""),
    ("ResultId", ua.VariantType.String, ""),
    ("Camera", ua.VariantType.String, ""),
    ("FailsafeReason", ua.VariantType.String, ""),
    ("DecidedTime", ua.VariantType.DateTime, dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)),
    ("DeadlineTime", ua.VariantType.DateTime, dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)),
    ("MarginMs", ua.VariantType.Double, 0.0),
    ("Late", ua.VariantType.Boolean, False),
    ("PassCount", ua.VariantType.UInt32, 0),
    ("RejectCount", ua.VariantType.UInt32, 0),
    ("FailsafeCount", ua.VariantType.UInt32, 0),
    ("Sequence", ua.VariantType.UInt32, 0),  # written last: a change means all the fields above are new
    ("Heartbeat", ua.VariantType.UInt32, 0),
    ("Ready", ua.VariantType.Boolean, False),
    ("FailSafe", ua.VariantType.Boolean, True),
    ("Mode", ua.VariantType.String, ""),
    ("Recipe", ua.VariantType.String, ""),
    ("DecisionSet", ua.VariantType.String, ""),
)


def nid(ident: int | str, ns: int) -> ua.NodeId:
    """A NodeId in namespace `ns` (numeric or string identifier)."""
    if isinstance(ident, int):
        return ua.NodeId(ua.Int32(ident), ua.Int16(ns))
    return ua.NodeId(ua.String(ident), ua.Int16(ns))


def status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _unwrapped(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """asyncua passes method arguments as Variants: hand the handler their values."""

    async def call(parent: ua.NodeId, *args: Any) -> Any:
        return await fn(parent, *(a.Value if isinstance(a, ua.Variant) else a for a in args))

    return call


@dataclass
class ServerStats:
    published: int = 0
    events: int = 0
    errors: int = 0
    method_calls: int = 0
    last_error: str | None = None


@dataclass
class VisionServer:
    """The asyncua server and the station's state on it. Construct, `await start()`, `await publish(record)`."""

    endpoint: str
    application_uri: str
    station: str
    configure: Callable[[Server], Awaitable[None]]  # security: certificates, policies, users, ruleset
    control: Control | None = None
    ready_probe: Callable[[], bool] | None = None  # extra health condition for Ready (pipeline heartbeats)
    heartbeat_s: float = 1.0
    user_manager: Any = None
    result_store_size: int = 1000  # results GetResultById can still find
    stats: ServerStats = field(default_factory=ServerStats)

    def __post_init__(self) -> None:
        self.server: Server | None = None
        self.counters = Counters()
        self._vars: dict[str, tuple[ua.NodeId, ua.VariantType]] = {}
        self._halted_by_method = False
        self._job = itertools.count(1)
        self.job_id = "job-0"
        self._tasks: list[asyncio.Task[None]] = []
        self._operator_methods: list[ua.NodeId] = []
        self._read_methods: list[ua.NodeId] = []
        self.ns = 0
        self.mv = 0
        self.last_ready = False  # as of the last refresh (health() reads this, never the probe)
        self._last: dict[str, Any] = {}
        sets = self.control if isinstance(self.control, DecisionSets) else None
        self.configurations = ConfigurationManagement(sets, self._control, self.refresh_state)
        self.results = ResultManagement(self.result_store_size)
        self._pending: set[asyncio.Task[Any]] = set()

    # -- set-up -----------------------------------------------------------------------------------
    async def start(self) -> None:
        server = Server(user_manager=self.user_manager)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"edge-inspect {self.station}")
        await server.set_application_uri(self.application_uri)
        await self.configure(server)
        await server.import_xml(str(nodeset_path()))
        self.mv = await server.get_namespace_index(NAMESPACE_URI)
        self.ns = await server.register_namespace(STATION_NS)
        await server.load_data_type_definitions()
        self.server = server
        await self._build_vision_system(server)
        await self._build_station(server)
        await server.start()
        await self.refresh_state()
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="opcua-heartbeat"))
        on_change = getattr(self.control, "on_change", None)
        if callable(on_change):  # changes made elsewhere (the web API) show at once, not at the next beat
            loop = asyncio.get_running_loop()
            on_change(lambda *_: loop.call_soon_threadsafe(self._refresh_soon))
        log.info("opcua: serving %s (station %s)", self.endpoint, self.station)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def _refresh_soon(self) -> None:
        if self.server is None:
            return
        task = asyncio.create_task(self.refresh_state(), name="opcua-refresh")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @property
    def operator_methods(self) -> list[ua.NodeId]:
        return list(self._operator_methods)

    @property
    def read_methods(self) -> list[ua.NodeId]:
        """Methods that only read (lists, lookups, handle releases): read-only users may call them too."""
        return list(self._read_methods)

    async def _build_vision_system(self, server: Server) -> None:
        ns, mv = self.ns, self.mv
        self.vs = await server.nodes.objects.add_object(
            nid("VisionSystem", ns), ua.QualifiedName("VisionSystem", ns), objecttype=nid(VISION_SYSTEM_TYPE, mv)
        )
        ids = nodeid_table()
        self._state_ids = {
            name: nid(ids[f"VisionStateMachineType_{name}"], mv)
            for name in ("Preoperational", "Halted", "Error", "Operational")
        }
        self._auto_ids = {
            name: nid(ids[f"VisionAutomaticModeStateMachineType_{name}"], mv)
            for name in ("Initialized", "Ready", "SingleExecution", "ContinuousExecution")
        }
        sm = await self.vs.get_child([f"{mv}:VisionStateMachine"])
        am = await sm.get_child([f"{mv}:AutomaticModeStateMachine"])
        self._sm_state = await sm.get_child(["0:CurrentState"])
        self._sm_state_id = await self._sm_state.get_child(["0:Id"])
        self._am_state = await am.get_child(["0:CurrentState"])
        self._am_state_id = await self._am_state.get_child(["0:Id"])
        handlers: dict[tuple[Node, str], Callable[..., Awaitable[Any]]] = {
            (sm, "Halt"): self._m_halt,
            (sm, "Reset"): self._m_reset,
            (sm, "SelectModeAutomatic"): self._m_ok,
            (sm, "ConfirmAll"): self._m_ok,
            (am, "StartSingleJob"): self._m_start_single,
            (am, "StartContinuous"): self._m_start_continuous,
            (am, "Stop"): self._m_stop,
            (am, "Abort"): self._m_stop,
        }
        rm = await self.vs.get_child([f"{mv}:RecipeManagement"])
        engineer = {
            (rm, "PrepareRecipe"): self._m_prepare_recipe,
            (rm, "UnprepareRecipe"): self._m_unprepare_recipe,
            (rm, "GetRecipeListFiltered"): self._m_recipe_list,
        }
        for (parent, name), fn in {**handlers, **engineer}.items():
            method = await parent.get_child([f"{mv}:{name}"])
            server.link_method(method, _unwrapped(fn))
            if (parent, name) in handlers:
                self._operator_methods.append(method.nodeid)

        def link(method: Node, fn: Callable[..., Awaitable[Any]]) -> None:
            server.link_method(method, _unwrapped(fn))

        cm = await self.vs.get_child([f"{mv}:ConfigurationManagement"])
        self._operator_methods += await self.configurations.link(server, cm, mv, link)
        results = await self.vs.get_child([f"{mv}:ResultManagement"])
        self._operator_methods += await self.results.link(results, mv, link)
        for parent, names in (
            (rm, ("GetRecipeListFiltered",)),
            (cm, ("GetConfigurationList", "GetConfigurationById", "ReleaseConfigurationHandle")),
            (results, ("GetResultById", "GetResultListFiltered", "ReleaseResultHandle")),
        ):
            for name in names:
                self._read_methods.append((await parent.get_child([f"{mv}:{name}"])).nodeid)
        self.events = await server.get_event_generator(nid(RESULT_READY_EVENT_TYPE, mv), self.vs.nodeid)
        # the Server object is the root notifier: clients subscribed there (UaExpert's event view) see them too
        await server.nodes.server.add_reference(self.vs.nodeid, ua.ObjectIds.HasNotifier)
        ev = self.events.event
        # asyncua leaves subtypes of built-in types untyped: name them, so that every stack decodes them
        ev.data_types.update(
            CreationTime=ua.VariantType.DateTime,
            IsPartial=ua.VariantType.Boolean,
            IsSimulated=ua.VariantType.Boolean,
            ResultState=ua.VariantType.Int32,
            ResultContent=ua.VariantType.Variant,
            ExternalRecipeId=ua.VariantType.ExtensionObject,
            InternalRecipeId=ua.VariantType.ExtensionObject,
            ExternalConfigurationId=ua.VariantType.ExtensionObject,
            InternalConfigurationId=ua.VariantType.ExtensionObject,
        )

    async def _build_station(self, server: Server) -> None:
        ns = self.ns
        station = await server.nodes.objects.add_object(nid("Station", ns), ua.QualifiedName("Station", ns))
        for name, vtype, initial in FLAT_VARIABLES:
            node = await station.add_variable(
                nid(f"Station.{name}", ns), ua.QualifiedName(name, ns), ua.Variant(initial, vtype), varianttype=vtype
            )
            self._vars[name] = (node.nodeid, vtype)
        self.station_node = station

    # -- values -----------------------------------------------------------------------------------
    async def _set(self, name: str, value: Any) -> None:
        """Write a flat variable when its value changed (subscribers see only real changes)."""
        assert self.server is not None
        if self._last.get(name, _UNSET) == value:
            return
        nodeid, vtype = self._vars[name]
        await self.server.write_attribute_value(nodeid, ua.DataValue(ua.Variant(value, vtype)))
        self._last[name] = value

    def _mode(self) -> str:
        if self.control is None:
            return "running"
        try:
            return self.control.mode()
        except Exception:
            log.exception("opcua: reading the service's mode failed")
            return "halted"

    def ready(self) -> bool:
        mode = self._mode()
        ok = self.ready_probe() if self.ready_probe is not None else True
        return mode in ("running", "single") and ok and not self._halted_by_method

    async def refresh_state(self) -> VisionStates:
        """Bring the state machines and Ready/FailSafe/Mode/Recipe in line with the service."""
        assert self.server is not None
        mode = self._mode()
        if mode != "halted":
            self._halted_by_method = False
        states = vision_states(mode, self._halted_by_method)
        auto = states.automatic or "Initialized"
        for node, value in (
            (self._sm_state, ua.LocalizedText(states.main)),
            (self._sm_state_id, self._state_ids[states.main]),
            (self._am_state, ua.LocalizedText(auto)),
            (self._am_state_id, self._auto_ids[auto]),
        ):
            await self.server.write_attribute_value(node.nodeid, ua.DataValue(ua.Variant(value)))
        ready = self.last_ready = self.ready()
        await self._set("Ready", ready)
        await self._set("FailSafe", not ready)
        await self._set("Mode", mode)
        if self.control is not None:
            try:
                await self._set("Recipe", self.control.active_recipe())
                await self._set("DecisionSet", self.configurations.active())
                await self.configurations.show(self.server)
            except Exception:
                log.exception("opcua: reading the active recipe or decision set failed")
        return states

    async def _heartbeat(self) -> None:
        beat = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.refresh_state()
                if self.last_ready:  # a stalled service stops the heartbeat: the PLC's watchdog fails safe
                    beat = (beat + 1) & 0xFFFFFFFF
                    await self._set("Heartbeat", beat)
            except Exception as exc:
                self.stats.errors += 1
                self.stats.last_error = f"heartbeat: {exc}"
                log.exception("opcua: heartbeat update failed")

    async def publish(self, record: dict[str, Any]) -> ResultFields:
        """One verdict: flat variables (Sequence last) and a ResultReadyEvent."""
        recipe = self.control.active_recipe() if self.control is not None else ""
        f = result_fields(record, self.job_id, recipe)
        self.counters.add(f.verdict)
        c = self.counters
        for name, value in (
            ("VerdictCode", f.verdict_code),
            ("Verdict", f.verdict),
            ("PartId", f.part_id),
            ("ResultId", f.result_id),
            ("Camera", f.camera),
            ("FailsafeReason", f.failsafe_reason),
            ("DecidedTime", f.creation_time),
            ("DeadlineTime", f.deadline_time),
            ("MarginMs", f.margin_ms),
            ("Late", f.late),
            ("PassCount", c.passed),
            ("RejectCount", c.rejected),
            ("FailsafeCount", c.failsafe),
            ("Sequence", c.sequence),
        ):
            await self._set(name, value)
        self.stats.published += 1
        # the threshold set that judged this part (schema 3); what is active now for older records
        config_version = str(record.get("config_version", ""))
        configuration = str(record.get("decision_set") or self.configurations.active())
        self.results.add(f, configuration, config_version)
        await self._trigger(f, config_version, configuration)
        return f

    async def _trigger(self, f: ResultFields, config_version: str, configuration: str) -> None:
        ev = self.events.event
        ev.ResultId = ua.ResultIdDataType(Id=f.result_id)  # type: ignore[attr-defined]
        ev.PartId = ua.PartIdDataType(Id=f.part_id)  # type: ignore[attr-defined]
        ev.MeasId = ua.MeasIdDataType(Id=f.meas_id)  # type: ignore[attr-defined]
        ev.JobId = ua.JobIdDataType(Id=f.job_id)  # type: ignore[attr-defined]
        ev.ResultState = f.verdict_code
        ev.CreationTime = f.creation_time
        ev.IsPartial = False
        ev.IsSimulated = False
        ev.ProcessingTimes = ua.ProcessingTimesDataType(  # type: ignore[attr-defined]
            StartTime=f.start_time,
            EndTime=f.end_time,
            AcquisitionDuration=f.acquisition_ms,
            ProcessingDuration=f.processing_ms,
        )
        ev.ResultContent = [ua.Variant(x, ua.VariantType.String) for x in f.content]
        recipe = f.recipe or "default"
        ev.ExternalRecipeId = ua.RecipeIdExternalDataType(Id=recipe)  # type: ignore[attr-defined]
        ev.InternalRecipeId = ua.RecipeIdInternalDataType(Id=recipe)  # type: ignore[attr-defined]
        ev.ExternalConfigurationId = ua.ConfigurationIdDataType(Id=config_version or "-")  # type: ignore[attr-defined]
        ev.InternalConfigurationId = ua.ConfigurationIdDataType(Id=configuration)  # type: ignore[attr-defined]
        ev.ProductId = None
        ev.Severity = f.severity
        await self.events.trigger(time_attr=f.creation_time, message=f.message)
        # the same event (same EventId) through the Server object; asyncua delivers events only to
        # the emitting node's subscribers, not up the notifier hierarchy
        ev.emitting_node = nid(ua.ObjectIds.Server, 0)
        try:
            await self.events.isession.subscription_service.trigger_event(ev)
        finally:
            ev.emitting_node = self.vs.nodeid
        self.stats.events += 1

    # -- methods (each returns its declared output arguments) -------------------------------------------
    async def _control(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a control call (it may load a model) off the loop."""
        self.stats.method_calls += 1
        return await asyncio.to_thread(fn, *args)

    def _error(self, code: int = 0) -> ua.Variant:
        return ua.Variant(code, ua.VariantType.Int32)

    async def _m_ok(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        return [self._error()]

    async def _m_halt(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        if self.control is not None:
            await self._control(self.control.halt, "opcua:Halt")
        self._halted_by_method = True
        await self.refresh_state()
        return [self._error()]

    async def _m_reset(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        self._halted_by_method = False  # Halted -> Preoperational -> Operational/Ready (jobs stay stopped)
        await self.refresh_state()
        return [self._error()]

    def _new_job(self) -> ua.Variant:
        self.job_id = f"job-{next(self._job)}"
        return ua.Variant(ua.JobIdDataType(Id=self.job_id), ua.VariantType.ExtensionObject)  # type: ignore[attr-defined]

    async def _maybe_recipe(self, recipe_id: Any) -> ua.StatusCode | None:
        name = getattr(recipe_id, "Id", None)
        if not name or self.control is None or name == self.control.active_recipe():
            return None
        if name not in self.control.recipes():
            return status(ua.StatusCodes.BadInvalidArgument)
        await self._control(self.control.activate_recipe, name, "opcua")
        return None

    async def _start(self, args: tuple[Any, ...], single: bool) -> list[ua.Variant] | ua.StatusCode:
        if self._halted_by_method:
            return status(ua.StatusCodes.BadInvalidState)  # Halted: Reset first
        bad = await self._maybe_recipe(args[2] if len(args) > 2 else None)
        if bad is not None:
            return bad
        if self.control is not None:
            if single:
                await self._control(self.control.single, 1, "opcua:StartSingleJob")
            else:
                await self._control(self.control.resume, "opcua:StartContinuous")
        job = self._new_job()
        await self.refresh_state()
        return [job, self._error()]

    async def _m_start_single(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        return await self._start(args, single=True)

    async def _m_start_continuous(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        return await self._start(args, single=False)

    async def _m_stop(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        if self.control is not None:
            await self._control(self.control.halt, "opcua:Stop")
        await self.refresh_state()
        return [self._error()]

    def _recipe_id(self, name: str) -> ua.Variant:
        return ua.Variant(ua.RecipeIdInternalDataType(Id=name), ua.VariantType.ExtensionObject)  # type: ignore[attr-defined]

    async def _m_prepare_recipe(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        name = getattr(args[0], "Id", None) if args else None
        name = name or (getattr(args[1], "Id", None) if len(args) > 1 else None)
        if self.control is None or not name or name not in self.control.recipes():
            return status(ua.StatusCodes.BadInvalidArgument)
        await self._control(self.control.activate_recipe, name, "opcua:PrepareRecipe")
        await self.refresh_state()
        return [self._recipe_id(name), ua.Variant(True, ua.VariantType.Boolean), self._error()]

    async def _m_unprepare_recipe(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        if self.control is None:
            return status(ua.StatusCodes.BadInvalidState)
        name = getattr(args[0], "Id", None) if args else None
        if name and name == self.control.active_recipe() and name != "default":
            await self._control(self.control.activate_recipe, "default", "opcua:UnprepareRecipe")
        await self.refresh_state()
        return [self._recipe_id(name or ""), self._error()]

    async def _m_recipe_list(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        names = self.control.recipes() if self.control is not None else []
        want = getattr(args[0], "Id", None) if args else None
        names = [n for n in names if not want or n == want]
        return [
            ua.Variant(True, ua.VariantType.Boolean),
            ua.Variant(len(names), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant([ua.RecipeIdInternalDataType(Id=n) for n in names], ua.VariantType.ExtensionObject),  # type: ignore[attr-defined]
            self._error(),
        ]
