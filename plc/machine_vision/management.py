"""The VisionSystem's ConfigurationManagement and ResultManagement (OPC 40100-1), on asyncua.

ConfigurationManagement maps onto the decision sets of `edge.control.ServiceControl`: a
configuration is a named threshold set (`default` = the top-level rules), its InternalId the
set's name. GetConfigurationList / GetConfigurationById list them, ActivateConfiguration applies
one (through the control's decision path: validated, swapped between frames, audited),
ReleaseConfigurationHandle closes a handle, ActiveConfiguration shows the set in force (`custom`
after a hand change, `recipe:<name>` for a recipe's own rules). Sets live in the config file:
AddConfiguration, RemoveConfiguration and ConfigurationTransfer answer BadNotSupported.

ResultManagement answers from a bounded store of the most recent results (`ResultStore`):
GetResultById, GetResultListFiltered (newest first), ReleaseResultHandle; a result id that is
unknown or no longer kept is BadNotFound. GetResultComponentsById and ResultTransfer answer
BadNotSupported. The `Timeout` arguments are accepted and ignored: every answer is immediate.

Only NodeSet types are used (ConfigurationDataType, ConfigurationIdDataType, ResultDataType, ...).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from asyncua import Node, Server, ua

from edge.errors import ConfigError
from plc.machine_vision.result_model import ResultFields
from plc.machine_vision.results_store import Handles, ResultFilter, ResultStore, StoredResult

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
Runner = Callable[..., Awaitable[Any]]  # runs a blocking control call off the I/O loop


@runtime_checkable
class DecisionSets(Protocol):
    """What ConfigurationManagement needs of `edge.control.ServiceControl`."""

    def decision_sets(self) -> list[str]: ...

    def active_decision_set(self) -> str: ...

    def activate_decision_set(self, name: str, who: str = ...) -> Any: ...


def status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _ok() -> ua.Variant:
    return ua.Variant(0, ua.VariantType.Int32)  # the methods' Error output: 0, no error


def _id(arg: Any) -> str:
    """The Id of an IdBaseDataType argument ("" when absent)."""
    return str(getattr(arg, "Id", "") or "")


def _uint(value: Any) -> int:
    return int(value) if isinstance(value, int) and value > 0 else 0


def _handle(h: int) -> ua.Variant:
    return ua.Variant(h, ua.VariantType.UInt32)  # Handle: a UInt32


def _ext(value: Any) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.ExtensionObject)


def _not_supported(why: str) -> Handler:
    async def refuse(parent: ua.NodeId, *args: Any) -> ua.StatusCode:
        log.info("opcua: %s", why)
        return status(ua.StatusCodes.BadNotSupported)

    return refuse


class ConfigurationManagement:
    def __init__(self, sets: DecisionSets | None, run: Runner, refresh: Callable[[], Awaitable[Any]]) -> None:
        self.sets = sets
        self._run = run
        self._refresh = refresh
        self.loaded = dt.datetime.now(dt.timezone.utc)  # the sets come with the config, loaded now
        self.handles = Handles()
        self._active_node: Node | None = None
        self._shown: str | None = None

    def names(self) -> list[str]:
        return self.sets.decision_sets() if self.sets is not None else []

    def active(self) -> str:
        return self.sets.active_decision_set() if self.sets is not None else "default"

    def data(self, name: str) -> Any:
        return ua.ConfigurationDataType(  # type: ignore[attr-defined]
            HasTransferableDataOnFile=False,
            InternalId=ua.ConfigurationIdDataType(Id=name),  # type: ignore[attr-defined]
            LastModified=self.loaded,
        )

    async def link(self, server: Server, cm: Node, mv: int, link: Callable[[Node, Handler], None]) -> list[ua.NodeId]:
        """Link the methods; returns those operators (and engineers) may call: all of them."""
        self._active_node = await cm.get_child([f"{mv}:ActiveConfiguration"])
        handlers: dict[str, Handler] = {
            "GetConfigurationList": self._m_list,
            "GetConfigurationById": self._m_get,
            "ActivateConfiguration": self._m_activate,
            "ReleaseConfigurationHandle": self._m_release,
        }
        out: list[ua.NodeId] = []
        for name, fn in handlers.items():
            method = await cm.get_child([f"{mv}:{name}"])
            link(method, fn)
            out.append(method.nodeid)
        for name in ("AddConfiguration", "RemoveConfiguration"):
            method = await cm.get_child([f"{mv}:{name}"])
            link(method, _not_supported(f"{name}: threshold sets are defined in the config file (decision_sets:)"))
            out.append(method.nodeid)  # an operator learns why, rather than that they may not
        return out

    async def show(self, server: Server) -> None:
        """ActiveConfiguration = the set in force (written when it changed)."""
        name = self.active()
        if self._active_node is None or name == self._shown:
            return
        await server.write_attribute_value(self._active_node.nodeid, ua.DataValue(_ext(self.data(name))))
        self._shown = name

    async def _m_list(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        limit, start = _uint(args[0] if args else 0), _uint(args[1] if len(args) > 1 else 0)
        names = self.names()
        end = len(names) if limit == 0 else min(len(names), start + limit)
        page = names[start:end]
        return [
            ua.Variant(end >= len(names), ua.VariantType.Boolean),
            ua.Variant(len(page), ua.VariantType.UInt32),
            _handle(self.handles.issue("configurations")),
            _ext([self.data(n) for n in page]),
            _ok(),
        ]

    async def _m_get(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        name = _id(args[0]) if args else ""
        if name not in self.names():
            return status(ua.StatusCodes.BadNotFound)
        return [_handle(self.handles.issue(name)), _ext(self.data(name)), _ok()]

    async def _m_activate(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        name = _id(args[0]) if args else ""
        if self.sets is None:
            return status(ua.StatusCodes.BadNotSupported)
        if name not in self.names():
            return status(ua.StatusCodes.BadNotFound)
        try:
            await self._run(self.sets.activate_decision_set, name, "opcua:ActivateConfiguration")
        except ConfigError as exc:  # e.g. the set names classes the active recipe's model lacks
            log.warning("opcua: ActivateConfiguration %s refused: %s", name, exc)
            return status(ua.StatusCodes.BadConfigurationError)
        await self._refresh()
        return [_ok()]

    async def _m_release(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        if not self.handles.release(_uint(args[0] if args else 0)):
            return status(ua.StatusCodes.BadInvalidArgument)
        return [_ok()]


class ResultManagement:
    def __init__(self, size: int) -> None:
        self.store = ResultStore(size)
        self.handles = Handles()

    def add(self, fields: ResultFields, configuration: str, config_version: str) -> None:
        self.store.add(fields, configuration, config_version)

    @staticmethod
    def data(r: StoredResult) -> Any:
        f = r.fields
        recipe = f.recipe or "default"
        return ua.ResultDataType(  # type: ignore[attr-defined]
            ResultId=ua.ResultIdDataType(Id=f.result_id),  # type: ignore[attr-defined]
            HasTransferableDataOnFile=False,
            IsPartial=False,
            IsSimulated=False,
            ResultState=f.verdict_code,
            MeasId=ua.MeasIdDataType(Id=f.meas_id),  # type: ignore[attr-defined]
            PartId=ua.PartIdDataType(Id=f.part_id),  # type: ignore[attr-defined]
            ExternalRecipeId=ua.RecipeIdExternalDataType(Id=recipe),  # type: ignore[attr-defined]
            InternalRecipeId=ua.RecipeIdInternalDataType(Id=recipe),  # type: ignore[attr-defined]
            ExternalConfigurationId=ua.ConfigurationIdDataType(Id=r.config_version or "-"),  # type: ignore[attr-defined]
            InternalConfigurationId=ua.ConfigurationIdDataType(Id=r.configuration),  # type: ignore[attr-defined]
            JobId=ua.JobIdDataType(Id=f.job_id),  # type: ignore[attr-defined]
            CreationTime=f.creation_time,
            ProcessingTimes=ua.ProcessingTimesDataType(  # type: ignore[attr-defined]
                StartTime=f.start_time,
                EndTime=f.end_time,
                AcquisitionDuration=f.acquisition_ms,
                ProcessingDuration=f.processing_ms,
            ),
            ResultContent=[ua.Variant(x, ua.VariantType.String) for x in f.content],
        )

    async def link(self, rm: Node, mv: int, link: Callable[[Node, Handler], None]) -> list[ua.NodeId]:
        """Link the methods; returns those operators (and engineers) may call: all of them."""
        handlers: dict[str, Handler] = {
            "GetResultById": self._m_get,
            "GetResultListFiltered": self._m_list,
            "ReleaseResultHandle": self._m_release,
        }
        out: list[ua.NodeId] = []
        for name, fn in handlers.items():
            method = await rm.get_child([f"{mv}:{name}"])
            link(method, fn)
            out.append(method.nodeid)
        method = await rm.get_child([f"{mv}:GetResultComponentsById"])
        link(method, _not_supported("GetResultComponentsById: use GetResultById"))
        out.append(method.nodeid)
        return out

    async def _m_get(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        found = self.store.get(_id(args[0]) if args else "")
        if found is None:  # never seen, or evicted from the store
            return status(ua.StatusCodes.BadNotFound)
        return [_handle(self.handles.issue(found.fields.result_id)), _ext(self.data(found)), _ok()]

    async def _m_list(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant]:
        a = list(args) + [None] * (12 - len(args))
        # ResultState, MeasId, PartId, External/InternalRecipeId, External/InternalConfigurationId,
        # ProductId, JobId, MaxResults, StartIndex, Timeout
        flt = ResultFilter(
            state=_uint(a[0]),
            meas_id=_id(a[1]),
            part_id=_id(a[2]),
            recipe=_id(a[4]) or _id(a[3]),
            configuration=_id(a[6]),
            config_version=_id(a[5]),
            job_id=_id(a[8]),
        )
        items, complete = self.store.query(flt, _uint(a[10]), _uint(a[9]))
        return [
            ua.Variant(complete, ua.VariantType.Boolean),
            ua.Variant(len(items), ua.VariantType.UInt32),
            _handle(self.handles.issue("results")),
            _ext([self.data(r) for r in items]),
            _ok(),
        ]

    async def _m_release(self, parent: ua.NodeId, *args: Any) -> list[ua.Variant] | ua.StatusCode:
        if not self.handles.release(_uint(args[0] if args else 0)):
            return status(ua.StatusCodes.BadInvalidArgument)
        return [_ok()]
