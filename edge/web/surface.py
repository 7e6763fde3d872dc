"""`OperatorSurface`: the audit trail, the evidence writer and the web app of one service.

Built from the config with the service (`from_config`); its audit sink joins the pipeline's
sinks; as a service component it is bound to the `ServiceContext` before the pipeline starts
(evidence and live-feed subscriptions, the audit of every control change), started after it
(the web server on the I/O loop) and closed before the sinks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edge.audit.config import AuditConfig
from edge.audit.sink import AuditSink
from edge.audit.store import AuditStore
from edge.evidence import EvidenceConfig, EvidenceRecorder
from edge.redact import Redactor
from edge.web.config import WebConfig
from edge.web.deps import WebDeps
from edge.web.feed import LiveFeed
from edge.web.security import TokenCheck
from edge.web.server import WebServer

log = logging.getLogger(__name__)


class OperatorSurface:
    name = "operator-surface"

    def __init__(
        self,
        audit: AuditConfig,
        evidence: EvidenceConfig,
        web: WebConfig,
        base_dir: Path,
        registry: Any = None,
        running_config: dict[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        state_dir: Path | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.web_config = web
        self.registry = registry
        self._running_config = Redactor(secrets).redact_obj(running_config or {})
        self._env = os.environ if env is None else env
        path = audit.resolve_path(base_dir, state_dir)
        self.store = AuditStore(path, audit.retention_days, audit.max_rows) if audit.enabled else None
        self.audit_sink = (
            AuditSink(self.store, queue_size=audit.queue_size, batch_size=audit.batch_size) if self.store else None
        )
        self.evidence = (
            EvidenceRecorder(evidence, evidence.resolve_dir(base_dir, state_dir), self.store)
            if evidence.enabled
            else None
        )
        if web.enabled:  # FastAPI's import is heavy: done here, at build time, not while frames flow
            import edge.web.app  # noqa: F401
        self.feed: LiveFeed | None = None
        self.server: WebServer | None = None
        self.deps: WebDeps | None = None
        self._ctx: Any = None
        self._subs: list[Any] = []

    @classmethod
    def from_config(cls, cfg: Any, registry: Any = None) -> OperatorSurface:
        """From a `LoadedConfig` (its `audit:`, `evidence:` and `web:` sections)."""
        app = cfg.app
        state = Path(getattr(app, "state_dir", "state")).expanduser()
        return cls(
            getattr(app, "audit", None) or AuditConfig(),
            getattr(app, "evidence", None) or EvidenceConfig(),
            getattr(app, "web", None) or WebConfig(),
            cfg.base_dir,
            registry,
            app.model_dump(mode="json"),
            state_dir=state if state.is_absolute() else cfg.base_dir / state,
            secrets=getattr(cfg, "secrets", ()),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.store or self.evidence or self.web_config.enabled)

    def sinks(self) -> list[Any]:
        """The sinks this surface adds to the pipeline's (the audit)."""
        return [self.audit_sink] if self.audit_sink is not None else []

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    # -- service component -----------------------------------------------------------------------
    def bind(self, ctx: Any) -> None:
        """Before the pipeline starts: subscriptions (so no verdict is missed) and the change audit."""
        self._ctx = ctx
        control = getattr(ctx, "control", None)
        if self.evidence is not None:
            if control is not None:
                self.evidence.references_for = control.references_for
            self.evidence.start()
            self._subs.append(ctx.subscribe(self.evidence, "evidence"))
        if self.store is not None and control is not None:
            self.store.open()
            control.on_change(self._on_change)
        if self.web_config.enabled:
            self.feed = LiveFeed(lambda: ctx.snapshot().to_dict(), self.web_config.recent)
            self._subs.append(ctx.subscribe(self.feed, "web-feed"))

    def start(self) -> None:
        """After the pipeline started: the web server on the service's I/O loop."""
        if not self.web_config.enabled or self._ctx is None or self.feed is None:
            return
        from edge.web.app import create_app

        ctx = self._ctx
        token_env = self.web_config.token_env
        token = self._env.get(token_env) or None
        if token is None:
            log.warning("web: %s is not set; the API is read-only", token_env)
        elif len(token) < 16:
            log.warning("web: the token in %s is short (%d characters); use 16 or more", token_env, len(token))
        if self.web_config.host not in ("127.0.0.1", "localhost", "::1") and token is None:
            log.warning("web: serving on %s, beyond this host, with no write token", self.web_config.host)

        def ready() -> tuple[bool, list[str]]:
            snap = ctx.snapshot()
            reasons = list(snap.not_ready_reasons())
            return not reasons, reasons

        self.deps = WebDeps(
            config=self.web_config,
            feed=self.feed,
            control=getattr(ctx, "control", None),
            tokens=TokenCheck(token, token_env),
            running_config=lambda: self._running_config,
            ready=ready,
            audit=self.store,
            evidence=self.evidence,
            registry=self.registry,
        )
        self.server = WebServer(create_app(self.deps), self.web_config.host, self.web_config.port)
        self.server.start(ctx.ioloop)

    def close(self, timeout: float = 5.0) -> None:
        if self.deps is not None:
            self.deps.stopping.set()
        if self.server is not None:
            self.server.stop(timeout)
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        if self.evidence is not None:
            self.evidence.close(timeout)

    def health(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "evidence": self.evidence.health() if self.evidence is not None else None,
            "audit": self.audit_sink.health() if self.audit_sink is not None else None,
        }

    def _on_change(self, kind: str, before: Any, after: Any, who: str) -> None:
        if self.store is not None:
            self.store.add_change(who, kind, before, after)
