"""When a verdict may still be acted on: its deadline, the margin it was decided with, staleness.

Pure functions over the verdict record (`Verdict.to_dict()`), shared by every PLC link.

A verdict is *current* when it is delivered for the first time, from this run of the service,
before its part's deadline, and was decided before that deadline. Anything else is *stale*:

- ``late``: decided after its deadline (negative margin) -- the part has passed the ejector;
- ``expired``: delivered after its deadline (an outage or a slow link held it back);
- ``replayed``: journaled by an earlier run of the service (delivered after a restart).

A verdict retried after a short outage of the link is still current if it arrives before its
deadline (``attempts`` says it was retried); subscribers de-duplicate by result id.

A stale verdict is a record, never a command: the MQTT link publishes it on the station's
``late/`` topics, the OPC UA client never writes it into the PLC's actuation tags, and the OPC UA
server flags it. The PLC applies its own fail-safe to a part whose verdict did not arrive in time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def deadline_wall_ns(record: Mapping[str, Any]) -> int:
    """The part's deadline on the wall clock (ns since the epoch)."""
    given = record.get("deadline_wall_ns")
    if isinstance(given, int):
        return given
    ts = record.get("timestamps_ns") or {}
    decided_wall = int(ts.get("decided_wall", 0))
    # the record's other stamps are host-monotonic: carry the deadline's offset over to the wall clock
    return decided_wall + int(ts.get("deadline", 0)) - int(ts.get("decided", 0))


def margin_ms(record: Mapping[str, Any]) -> float:
    """Deadline minus decision time, in ms; negative when the verdict was decided late."""
    given = record.get("margin_ms")
    if isinstance(given, (int, float)):
        return float(given)
    ts = record.get("timestamps_ns") or {}
    return (int(ts.get("deadline", 0)) - int(ts.get("decided", 0))) / 1e6


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one verdict is being delivered, right now."""

    late: bool  # decided after its deadline
    expired: bool  # being delivered after its deadline
    replayed: bool  # from the outbox of an earlier run of the service
    deadline_wall_ns: int
    margin_ms: float
    remaining_ms: float  # deadline - now at delivery; negative once expired
    attempts: int  # earlier failed deliveries of it

    @property
    def stale(self) -> bool:
        """Not to be acted on as the current part's verdict."""
        return self.late or self.expired or self.replayed

    def to_dict(self) -> dict[str, Any]:
        return {
            "stale": self.stale,
            "late": self.late,
            "expired": self.expired,
            "replayed": self.replayed,
            "deadline_wall_ns": self.deadline_wall_ns,
            "margin_ms": round(self.margin_ms, 3),
            "remaining_ms": round(self.remaining_ms, 3),
            "attempts": self.attempts,
        }


def classify(record: Mapping[str, Any], now_wall_ns: int, replayed: bool = False, attempts: int = 0) -> Delivery:
    """Classify a verdict record for delivery at `now_wall_ns`.

    `replayed` is true for an outbox entry written by an earlier run of the service; `attempts`
    counts earlier failed deliveries of it (informational: a retry before the deadline is current).
    """
    deadline = deadline_wall_ns(record)
    margin = margin_ms(record)
    remaining = (deadline - now_wall_ns) / 1e6
    return Delivery(
        late=margin < 0,
        expired=remaining <= 0,
        replayed=bool(replayed),
        deadline_wall_ns=deadline,
        margin_ms=margin,
        remaining_ms=remaining,
        attempts=attempts,
    )


def expiry_interval_s(delivery: Delivery) -> int:
    """MQTT v5 message-expiry interval for a current message: whole seconds left to the deadline.

    MQTT counts expiry in whole seconds, so a message lives at most one second past its
    deadline in a broker; subscribers still compare `deadline_wall_ns` with their clock.
    """
    return max(1, math.ceil(delivery.remaining_ms / 1000.0))
