"""`/api/v1`: status, verdicts, evidence, the running config, decision rules and sets, recipes, mode, changes.

Reads come from the read model (`LiveFeed`), the audit store and the evidence files. Every
write needs the bearer token, is validated (unknown fields refused) and is recorded in the
audit: applied changes by the control's change listener, refused attempts here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from edge.audit.export import iter_csv
from edge.audit.store import VerdictQuery
from edge.decision import DecisionConfig, describe
from edge.errors import ConfigError, EdgeInspectError
from edge.evidence import EVIDENCE_ID
from edge.web.deps import WebDeps
from edge.web.security import who as attribute

log = logging.getLogger(__name__)

ID_PATTERN = EVIDENCE_ID.pattern
ResultId = Annotated[str, Path(pattern=ID_PATTERN, max_length=40, description="A verdict's result id.")]


class RecipeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, description="One of the configured recipes.")


class DecisionSetChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=128, description="One of the configured decision sets.")


class ModeChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["running", "halted", "single"] = Field(..., description="running, halted, or single n frames.")
    n: int = Field(1, ge=1, le=1_000_000, description="With mode single: frames to judge before halting.")


def _ns(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:  # a time without a zone is UTC
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1e9)


def status_view(deps: WebDeps) -> dict[str, Any]:
    """The snapshot plus what only the operator surface knows."""
    out = dict(deps.feed.snapshot())
    out["write_api"] = deps.tokens.token is not None
    out["evidence"] = deps.evidence.health() if deps.evidence is not None else None
    out["audit"] = (
        {"path": str(deps.audit.path), "rows_written": deps.audit.rows_written} if deps.audit is not None else None
    )
    return out


def build_api(deps: WebDeps) -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    def writer(what: str) -> Callable[..., Any]:
        """The dependency of a write endpoint: token checked, refusals audited; gives `who`."""

        def check(
            request: Request,
            authorization: Annotated[str | None, Header()] = None,
            x_operator: Annotated[str | None, Header(max_length=64)] = None,
        ) -> str:
            client = request.client.host if request.client else None
            problem = deps.tokens.check(authorization)
            if problem is None:
                return attribute(x_operator, client, True)
            if deps.audit is not None:
                deps.audit.add_change(attribute(x_operator, client, False), what, None, None, "refused", problem)
            log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, problem)
            if deps.tokens.token is None:
                raise HTTPException(403, problem)
            raise HTTPException(401, problem, headers={"WWW-Authenticate": "Bearer"})

        return check

    def control() -> Any:
        if deps.control is None:
            raise HTTPException(503, "the service's control is not available")
        return deps.control

    def audit() -> Any:
        if deps.audit is None:
            raise HTTPException(404, "the audit trail is off (config: audit.enabled)")
        return deps.audit

    async def change(fn: Callable[[], Any]) -> Any:
        def locked() -> Any:
            with deps.write_lock:
                return fn()

        try:
            return await run_in_threadpool(locked)
        except ConfigError as exc:
            raise HTTPException(422, {"message": str(exc), "errors": exc.errors}) from exc
        except EdgeInspectError as exc:
            raise HTTPException(409, str(exc)) from exc

    # -- reads ------------------------------------------------------------------------------------
    @api.get("/status", summary="The station now: state, counts, rates, latency, health")
    def status() -> dict[str, Any]:
        return status_view(deps)

    @api.get("/verdicts", summary="Verdicts, newest first, paged (cursor `before`), filtered")
    def verdicts(
        since: Annotated[datetime | None, Query(description="From this time (ISO 8601; UTC if no zone)")] = None,
        until: Annotated[datetime | None, Query(description="Before this time")] = None,
        camera: Annotated[str | None, Query(max_length=128)] = None,
        part_id: Annotated[str | None, Query(max_length=256)] = None,
        verdict: Annotated[Literal["PASS", "REJECT", "FAILSAFE"] | None, Query()] = None,
        cls: Annotated[str | None, Query(alias="class", max_length=128, description="Defect class name")] = None,
        failsafe_reason: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[str | None, Query(pattern=ID_PATTERN, description="Cursor: `next` of the last page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        if deps.audit is None:
            _, items = deps.feed.recent()
            return {"items": items, "next": None, "source": "live (audit off)"}
        q = VerdictQuery(_ns(since), _ns(until), camera, part_id, verdict, cls, failsafe_reason, before, limit)
        page = deps.audit.verdicts(q)
        page["source"] = "audit"
        return page

    @api.get("/verdicts.csv", summary="CSV export of the verdicts in a time range (default: the last 24 h)")
    def verdicts_csv(
        since: Annotated[datetime | None, Query()] = None,
        until: Annotated[datetime | None, Query()] = None,
    ) -> StreamingResponse:
        store = audit()
        now = datetime.now(timezone.utc)
        s = _ns(since) or int(now.timestamp() * 1e9) - 86400 * 10**9
        u = _ns(until)
        name = f"verdicts-{datetime.fromtimestamp(s / 1e9, timezone.utc):%Y%m%dT%H%M%SZ}.csv"
        return StreamingResponse(
            iter_csv(store, s, u),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @api.get("/verdicts/{result_id}", summary="One verdict with its evidence")
    def one_verdict(result_id: ResultId) -> dict[str, Any]:
        row = audit().verdict(result_id)
        if row is None:
            raise HTTPException(404, f"no verdict {result_id} in the audit trail")
        kinds = deps.evidence.kinds(result_id) if deps.evidence is not None else []
        row["evidence"] = {k: f"/api/v1/evidence/{result_id}/{k}" for k in kinds}
        return row

    @api.get(
        "/evidence/{result_id}/{kind}",
        summary="An evidence image by verdict id: image (detections drawn), heat (vs. reference), thumb",
        response_class=FileResponse,
    )
    def evidence(result_id: ResultId, kind: Literal["image", "heat", "thumb"]) -> FileResponse:
        path = deps.evidence.path_for(result_id, kind) if deps.evidence is not None else None
        if path is None:
            raise HTTPException(404, f"no {kind} evidence kept for {result_id}")
        media = "image/png" if path.suffix == ".png" else "image/jpeg"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=86400"})

    @api.get("/config", summary="The running config (secrets redacted) and the rules in force")
    def running_config() -> dict[str, Any]:
        out: dict[str, Any] = {"config": deps.running_config()}
        if deps.control is not None:
            out["decision"] = deps.control.decision()
            out["recipe"] = deps.control.active_recipe()
        return out

    @api.get("/decision", summary="The decision rules in force")
    def get_decision() -> dict[str, Any]:
        return dict(control().decision())

    @api.get("/decision/effective", summary="The thresholds in force per class (config + calibrated sidecar)")
    def effective_decision() -> dict[str, Any]:
        return dict(describe(control().rules()))

    @api.get("/decision/history", summary="Changes to the decision rules (from the audit trail)")
    def decision_history(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        return list(audit().changes(what="decision", limit=limit))

    @api.get("/decision/sets", summary="The named threshold sets (`default`: the config's rules) and the active one")
    def decision_sets() -> dict[str, Any]:
        c = control()
        return {"active": c.active_decision_set(), "sets": c.decision_sets()}

    @api.get("/recipes", summary="The configured recipes (model + rules) and the active one")
    def recipes() -> dict[str, Any]:
        c = control()
        return {"active": c.active_recipe(), "recipes": c.recipe_info()}

    @api.get("/changes", summary="Every change and refused change made through the API, newest first")
    def changes(
        what: Annotated[str | None, Query(max_length=64)] = None,
        before_id: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        return list(audit().changes(what=what, limit=limit, before_id=before_id))

    @api.get("/events", summary="Server-sent events: `status` every interval, `verdicts` as they come")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            seq, items = deps.feed.recent()
            yield _sse("verdicts", {"seq": seq, "items": items, "reset": True})
            while not deps.stopping.is_set():
                yield _sse("status", status_view(deps))
                new_seq, fresh = deps.feed.recent(seq)
                if fresh:
                    yield _sse("verdicts", {"seq": new_seq, "items": fresh})
                seq = new_seq
                await asyncio.sleep(deps.config.sse_interval_s)
                if await request.is_disconnected():
                    return

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- writes -----------------------------------------------------------------------------------
    write_decision, write_recipe, write_mode = writer("decision"), writer("recipe"), writer("mode")
    write_set = writer("decision_set")

    @api.put("/decision", summary="Change the decision rules (validated, swapped in atomically, audited)")
    async def put_decision(section: DecisionConfig, who: str = Depends(write_decision)) -> dict[str, Any]:
        c = control()
        current = c.decision()
        body = section.model_dump(mode="json")
        if body.get("thresholds_file") != current.get("thresholds_file"):
            _refused(deps, who, "decision", current, body, "thresholds_file can only be changed in the config file")
        applied = await change(lambda: c.set_decision(body, who))
        return {"applied": applied, "before": current, "by": who}

    @api.post("/decision/revert", summary="Back to the rules in force before the last change (audited)")
    async def revert_decision(who: str = Depends(write_decision)) -> dict[str, Any]:
        c = control()
        current = c.decision()
        applied = await change(lambda: c.revert_decision(who))
        return {"applied": applied, "before": current, "by": who}

    @api.put("/decision/set", summary="Apply a named threshold set (validated, swapped in atomically, audited)")
    async def put_decision_set(body: DecisionSetChange, who: str = Depends(write_set)) -> dict[str, Any]:
        c = control()
        before = c.active_decision_set()
        if body.name not in c.decision_sets():
            _refused(deps, who, "decision_set", before, body.name, f"unknown decision set {body.name!r}", 404)
        applied = await change(lambda: c.activate_decision_set(body.name, who))
        return {"active": c.active_decision_set(), "before": before, "applied": applied, "by": who}

    @api.put("/recipe", summary="Switch to another configured recipe (model loaded off the hot path)")
    async def put_recipe(body: RecipeChange, who: str = Depends(write_recipe)) -> dict[str, Any]:
        c = control()
        if body.name not in c.recipes():
            _refused(deps, who, "recipe", c.active_recipe(), body.name, f"unknown recipe {body.name!r}", 404)
        active = await change(lambda: c.activate_recipe(body.name, who))
        return {"active": active, "by": who}

    @api.put("/mode", summary="Run, halt (every frame FAILSAFE `halted`), or judge n frames then halt")
    async def put_mode(body: ModeChange, who: str = Depends(write_mode)) -> dict[str, Any]:
        c = control()
        if body.mode == "running":
            await change(lambda: c.resume(who))
        elif body.mode == "halted":
            await change(lambda: c.halt(who))
        else:
            await change(lambda: c.single(body.n, who))
        return {"mode": c.mode(), "by": who}

    return api


def _refused(deps: WebDeps, who: str, what: str, before: Any, after: Any, why: str, status: int = 422) -> None:
    if deps.audit is not None:
        deps.audit.add_change(who, what, before, after, "refused", why)
    raise HTTPException(status, why)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
