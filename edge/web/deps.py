"""What the web app is given: the service context (snapshot, control), its read model, the audit
store, the evidence files, the metrics registry and the running config. Nothing else of the
service is reachable from a request."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.audit.store import AuditStore
from edge.decision import CompiledRules
from edge.evidence import EvidenceRecorder
from edge.web.config import WebConfig
from edge.web.feed import LiveFeed
from edge.web.security import TokenCheck


class Control(Protocol):
    """The part of `edge.control.ServiceControl` the web app uses."""

    def mode(self) -> str: ...

    def halt(self, who: str = ...) -> None: ...

    def resume(self, who: str = ...) -> None: ...

    def single(self, n: int = ..., who: str = ...) -> None: ...

    def decision(self) -> dict[str, Any]: ...

    def rules(self) -> CompiledRules: ...

    def set_decision(self, section: dict[str, Any], who: str) -> dict[str, Any]: ...

    def revert_decision(self, who: str) -> dict[str, Any]: ...

    def recipes(self) -> list[str]: ...

    def recipe_info(self) -> dict[str, dict[str, Any]]: ...

    def active_recipe(self) -> str: ...

    def activate_recipe(self, name: str, who: str = ...) -> str: ...

    def decision_sets(self) -> list[str]: ...

    def active_decision_set(self) -> str: ...

    def activate_decision_set(self, name: str, who: str = ...) -> dict[str, Any]: ...


@dataclass
class WebDeps:
    config: WebConfig
    feed: LiveFeed
    control: Control | None
    tokens: TokenCheck
    running_config: Any  # () -> dict, the config in force (secrets redacted)
    ready: Any  # () -> (bool, list[str])
    audit: AuditStore | None = None
    evidence: EvidenceRecorder | None = None
    registry: Any = None  # prometheus CollectorRegistry
    stopping: threading.Event = field(default_factory=threading.Event)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
