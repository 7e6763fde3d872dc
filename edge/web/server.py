"""`WebServer`: uvicorn serving the app on the service's I/O loop (never the hot path's threads).

The listening socket is bound in `start()` (so a taken port is an error at start, and port 0
gets a free one); the server coroutine then runs on the `IoLoop` until `stop()`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import time
from typing import Any, Protocol

import uvicorn

from edge.errors import EdgeInspectError

log = logging.getLogger(__name__)


class Loop(Protocol):
    """The part of `edge.ioloop.IoLoop` the server needs."""

    def run(self, coro: Any) -> concurrent.futures.Future[Any]: ...


class WebServer:
    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, loop: Loop, timeout: float = 15.0) -> None:
        try:
            info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(info[0], socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
            sock.listen(128)
        except OSError as exc:
            raise EdgeInspectError(f"web: cannot listen on {self.host}:{self.port} ({exc.strerror or exc})") from exc
        sock.setblocking(False)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws="none",
        )
        self._server = uvicorn.Server(config)
        self._future = loop.run(self._server.serve(sockets=[sock]))
        end = time.monotonic() + timeout
        while not self._server.started:
            if self._future.done():
                raise EdgeInspectError(f"web: server did not start ({self._future.exception()})")
            if time.monotonic() > end:
                raise EdgeInspectError("web: server did not start in time")
            time.sleep(0.01)
        log.info("status page on %s (API: %sapi/docs)", self.url, self.url)

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None or self._future is None:
            return
        self._server.should_exit = True
        try:
            self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            self._server.force_exit = True
            log.warning("web: server still closing after %.1f s", timeout)
        except Exception:
            log.exception("web: server stopped with an error")
        if self._sock is not None:
            self._sock.close()
        self._server = None
        self._future = None
