"""The FastAPI app: pages, `/api/v1`, `/metrics`, `/healthz`, `/readyz`; every asset local."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge.web.api import ID_PATTERN, build_api
from edge.web.deps import WebDeps
from edge.web.security import BodyLimit
from edge.web.security import who as attribute

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


def create_app(deps: WebDeps) -> FastAPI:
    app = FastAPI(
        title="edge-inspect",
        summary="Inline inspection station: status, verdicts, evidence, decision rules",
        version="1",
        docs_url=None,  # FastAPI's docs pages load from a CDN; /api/docs renders the schema locally
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.add_middleware(BodyLimit, limit=deps.config.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=deps.config.trusted_hosts())

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            msg = (
                "unknown field (not allowed here; check the spelling)"
                if e.get("type") == "extra_forbidden"
                else e.get("msg")
            )
            errors.append(f"{loc}: {msg}")
        if request.method not in ("GET", "HEAD") and deps.audit is not None:
            authorised = deps.tokens.check(request.headers.get("authorization")) is None
            client = request.client.host if request.client else None
            who = attribute(request.headers.get("x-operator"), client, authorised)
            what = request.url.path.removeprefix("/api/v1/").split("/")[0] or request.url.path
            deps.audit.add_change(who, what, None, None, "refused", "; ".join(errors)[:2000])
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.include_router(build_api(deps))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _page("index.html")

    @app.get("/rejects", include_in_schema=False)
    def rejects() -> FileResponse:
        return _page("gallery.html")

    @app.get("/verdict/{result_id}", include_in_schema=False)
    def verdict_page(result_id: str) -> FileResponse:
        if not re.fullmatch(ID_PATTERN, result_id):
            return _page("notfound.html")
        return _page("verdict.html")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return _page("docs.html")

    @app.get("/metrics", summary="Prometheus metrics", tags=["probes"])
    def metrics() -> Response:
        data = generate_latest(deps.registry) if deps.registry is not None else b""
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness: the service process answers", tags=["probes"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: cameras streaming, engine and workers running, sinks live", tags=["probes"])
    def readyz() -> JSONResponse:
        ready, reasons = deps.ready()
        return JSONResponse({"ready": ready, "not_ready": reasons}, status_code=200 if ready else 503)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
