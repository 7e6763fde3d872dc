"""MQTT topics and payloads for one station: pure, no I/O.

Topics under ``<prefix>/<station>/``:

- ``verdict``: every current verdict (PASS, REJECT, FAILSAFE);
- ``reject``: current REJECT and FAILSAFE verdicts only, with a message-expiry interval that ends
  (rounded up to whole seconds) at the part's deadline;
- ``late/verdict`` and ``late/reject``: the same for stale verdicts (late, expired or replayed):
  records for traceability, never commands;
- ``state``: retained ``online`` / ``behind`` (the outbox is not keeping up) / ``offline``
  (``offline`` is also the connection's last will).

The payload is the verdict record (`Verdict.to_dict()`, with its ``schema`` version) as UTF-8
JSON, plus ``station`` and ``delivery`` (see `plc.stale.Delivery`): whether it is stale and why,
the part's deadline on the wall clock, the margin it was decided with and the time left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plc.stale import Delivery, expiry_interval_s

BRIDGE_VERSION = 1  # version of what the bridge adds around the record ("station", "delivery")
REJECTING = ("REJECT", "FAILSAFE")
ONLINE = "online"
BEHIND = "behind"  # connected, but the outbox holds more than a batch: the link is not keeping up
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    station: str

    def _t(self, leaf: str) -> str:
        return f"{self.prefix}/{self.station}/{leaf}" if self.prefix else f"{self.station}/{leaf}"

    @property
    def verdict(self) -> str:
        return self._t("verdict")

    @property
    def reject(self) -> str:
        return self._t("reject")

    @property
    def late_verdict(self) -> str:
        return self._t("late/verdict")

    @property
    def late_reject(self) -> str:
        return self._t("late/reject")

    @property
    def state(self) -> str:
        return self._t("state")


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    expiry_s: int | None  # MQTT v5 message-expiry interval, None = no expiry


def payload(record: Mapping[str, Any], station: str, delivery: Delivery) -> dict[str, Any]:
    """The JSON document published for a verdict record."""
    out = dict(record)
    out.setdefault("deadline_wall_ns", delivery.deadline_wall_ns)
    out.setdefault("margin_ms", round(delivery.margin_ms, 3))
    out["station"] = station
    out["bridge"] = BRIDGE_VERSION
    out["delivery"] = delivery.to_dict()
    return out


def messages(
    record: Mapping[str, Any],
    topics: Topics,
    delivery: Delivery,
    all_verdicts: bool = True,
    rejects: bool = True,
) -> list[OutMessage]:
    """The messages one verdict becomes (none, one or two)."""
    body = json.dumps(payload(record, topics.station, delivery), separators=(",", ":")).encode()
    out: list[OutMessage] = []
    if all_verdicts:
        topic = topics.late_verdict if delivery.stale else topics.verdict
        out.append(OutMessage(topic, body, None))
    if rejects and record.get("verdict") in REJECTING:
        if delivery.stale:
            out.append(OutMessage(topics.late_reject, body, None))
        else:
            out.append(OutMessage(topics.reject, body, expiry_interval_s(delivery)))
    return out
