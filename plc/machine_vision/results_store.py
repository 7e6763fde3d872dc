"""What ResultManagement answers from: the most recent results and the handles given out. Pure, no I/O.

`ResultStore` keeps the last `size` results (the same `ResultFields` the server puts into each
`ResultReadyEvent`, with the configuration they were judged under), looked up by result id or
filtered like `GetResultListFiltered`, newest first. `Handles` numbers the answers of the
Get...-methods until the client releases them (bounded: the oldest are forgotten).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from plc.machine_vision.result_model import ResultFields


@dataclass(frozen=True, slots=True)
class StoredResult:
    fields: ResultFields
    configuration: str  # InternalConfigurationId: the decision set in force when it was published
    config_version: str = ""  # ExternalConfigurationId: the config file's version


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """The criteria of GetResultListFiltered; an empty value (0 for the state) matches every result."""

    state: int = 0
    meas_id: str = ""
    part_id: str = ""
    recipe: str = ""
    configuration: str = ""
    config_version: str = ""
    job_id: str = ""

    def matches(self, r: StoredResult) -> bool:
        f = r.fields
        return (
            (not self.state or f.verdict_code == self.state)
            and (not self.meas_id or f.meas_id == self.meas_id)
            and (not self.part_id or f.part_id == self.part_id)
            and (not self.recipe or (f.recipe or "default") == self.recipe)
            and (not self.configuration or r.configuration == self.configuration)
            and (not self.config_version or r.config_version == self.config_version)
            and (not self.job_id or f.job_id == self.job_id)
        )


class ResultStore:
    """The last `size` results by result id (0: none kept); adding beyond that evicts the oldest."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, fields: ResultFields, configuration: str, config_version: str = "") -> None:
        if self.size == 0:
            return
        self._items.pop(fields.result_id, None)  # a re-delivered verdict counts as its newest copy
        self._items[fields.result_id] = StoredResult(fields, configuration, config_version)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
            self.evicted += 1

    def get(self, result_id: str) -> StoredResult | None:
        return self._items.get(result_id)

    def query(self, flt: ResultFilter, start: int = 0, limit: int = 0) -> tuple[list[StoredResult], bool]:
        """Matching results, newest first, from index `start`, at most `limit` (0: all).
        Returns them and whether no match is left after them (IsComplete)."""
        hits = [r for r in reversed(self._items.values()) if flt.matches(r)]
        end = len(hits) if limit <= 0 else min(len(hits), start + limit)
        return hits[start:end], end >= len(hits)


class Handles:
    """Handles (UInt32, never 0) given out with answers, until released; the oldest are forgotten
    beyond `size`."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._next = 0
        self._open: OrderedDict[int, str] = OrderedDict()

    def issue(self, what: str) -> int:
        self._next = self._next % 0xFFFFFFFF + 1
        self._open[self._next] = what
        while len(self._open) > self.size:
            self._open.popitem(last=False)
        return self._next

    def release(self, handle: int) -> bool:
        """True when the handle was open (it is closed now)."""
        return self._open.pop(handle, None) is not None

    def __len__(self) -> int:
        return len(self._open)
