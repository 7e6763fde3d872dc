"""Reading and writing GenICam (GenApi) nodes, with errors that say what to change.

`write_node` raises `CameraNodeError` naming the device, the node and why: a node that does not
exist (with close matches among the device's public nodes), one that is not writable now, or a
value the device refused (with the enumeration's choices or the number's range).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from genicam.genapi import ICommand, IEnumeration

from edge.errors import CameraNodeError

NodeValue = str | int | float | bool

# GenApi access modes (EAccessMode): NI, NA, WO, RO, RW
_ACCESS_NAMES = {0: "not implemented", 1: "not available", 2: "write-only", 3: "read-only", 4: "read-write"}
_WRITABLE = (2, 4)

_INTERNAL_NODE = re.compile(r"^(EnumEntry_|_)|_(Val|ValCalc|LockCalc|ValConv|ValDisp|Len|AvailCalc|Calc|Addr|Reg)$")


def _genapi_message(exc: BaseException) -> str:
    """A GenApi exception's own words, without the 'XxxException thrown in node ... (file ...)' tail."""
    return re.sub(r"\s*:\s*\w+Exception thrown in node.*$", "", str(exc), flags=re.S).strip()


def _node_names(node_map: Any) -> list[str]:
    try:
        names = [n.node.name for n in node_map.nodes]
    except Exception:
        return []
    return [n for n in names if not _INTERNAL_NODE.search(n)]


def get_node(node_map: Any, name: str) -> Any | None:
    """The node called `name`, or None where the device has none."""
    try:
        return node_map.get_node(name)
    except Exception:  # LogicalErrorException: node not existing
        return None


def _access(node: Any) -> int:
    try:
        return int(node.node.get_access_mode())
    except Exception:
        return 1


def has_writable_node(node_map: Any, name: str) -> bool:
    node = get_node(node_map, name)
    return node is not None and _access(node) in _WRITABLE


def write_node(node_map: Any, name: str, value: NodeValue, device: str) -> None:
    """Write one node, raising CameraNodeError that names the node, the device and why."""
    node = get_node(node_map, name)
    if node is None:
        close = difflib.get_close_matches(name, _node_names(node_map), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise CameraNodeError(f"{device}: no GenICam node {name!r}{hint}")
    access = _access(node)
    if access not in _WRITABLE:
        raise CameraNodeError(
            f"{device}: node {name!r} is not writable now ({_ACCESS_NAMES.get(access, access)}); "
            "another setting may lock it (e.g. an Auto mode, or acquisition running)"
        )
    try:
        if isinstance(node, ICommand):
            if value is True:
                node.execute()
            return
        if isinstance(node, IEnumeration) and not isinstance(value, str):
            value = str(value)
        node.value = value
    except Exception as exc:
        hint = ""
        try:
            if isinstance(node, IEnumeration):
                hint = f"; choices: {', '.join(node.symbolics)}"
            elif hasattr(node, "min") and hasattr(node, "max"):
                hint = f"; range {node.min}..{node.max}"
        except Exception:
            pass
        msg = _genapi_message(exc)
        raise CameraNodeError(f"{device}: cannot set {name} = {value!r}: {msg}{hint}") from exc
