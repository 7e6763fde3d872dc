"""Write-endpoint security: the bearer token, who made a change, and the request body limit."""

from __future__ import annotations

import hmac
import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_OPERATOR = re.compile(r"^[\w .@-]{1,64}$")


class TokenCheck:
    """Compares a request's `Authorization: Bearer <token>` with the configured token."""

    def __init__(self, token: str | None, env_name: str) -> None:
        self.token = token or None
        self.env_name = env_name

    def check(self, authorization: str | None) -> str | None:
        """None when the request may write, else why not (for a 401/403 and the audit)."""
        if self.token is None:
            return f"the write API is disabled: set {self.env_name} in the service's environment"
        if not authorization:
            return "missing bearer token (Authorization: Bearer <token>)"
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return "malformed Authorization header (expected: Bearer <token>)"
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return "wrong token"
        return None


def who(operator: str | None, client: str | None, authorised: bool) -> str:
    """How a change is attributed in the audit: the operator's name (X-Operator) and address."""
    name = operator if operator and _OPERATOR.match(operator) else None
    base = ("token" if authorised else "anonymous") + (f":{name}" if name else "")
    return f"api {base}@{client or '?'}"


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413, whether announced by
    Content-Length or streamed in chunks, before the endpoint sees them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        # read the whole body first (it is small: at most `limit`), then hand it on
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
