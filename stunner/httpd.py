"""A tiny HTTP/1.1 server on the event loop, for /metrics and the health checks.

It runs on the relay's own loop, so the Collector reads the counters without locks, and a
scrape never races the data path. One request per connection; Prometheus copes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus

from .config import HttpEndpoint

logger = logging.getLogger("stunner.httpd")

Response = tuple[int, str, bytes]
Handler = Callable[[str], Response]
MAX_HEAD = 8192
READ_TIMEOUT = 5.0


def text(status: int, body: str) -> Response:
    return status, "text/plain; charset=utf-8", body.encode()


class HttpServer:
    def __init__(self, role: str, endpoint: HttpEndpoint, handler: Handler) -> None:
        self.role = role
        self.endpoint = endpoint
        self.handler = handler
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when the endpoint asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> bool:
        """Bind and serve; a bind failure is one log line, never a crash of the relay."""
        ep = self.endpoint
        try:
            self._server = await asyncio.start_server(
                self._serve, ep.host, ep.port, reuse_address=True
            )
        except OSError as exc:
            logger.error(
                "%s server cannot listen on %s:%d (%s); the relay keeps running without it",
                self.role,
                ep.host,
                ep.port,
                exc.strerror or exc,
            )
            return False
        logger.info("%s server listening on http://%s:%d%s", self.role, ep.host, self.port, ep.path)
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def matches(self, path: str) -> bool:
        """A ``/`` endpoint serves every path; any other path must match exactly."""
        return self.endpoint.path == "/" or path == self.endpoint.path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            status, ctype, body, method = self._answer(head)
            status_line = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            headers = (
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write((status_line + headers).encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, head: bytes) -> tuple[int, str, bytes, str]:
        if len(head) > MAX_HEAD:
            return (*text(431, "request header too large\n"), "GET")
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return (*text(400, "bad request\n"), "GET")
        if method not in ("GET", "HEAD"):
            return (*text(405, "method not allowed\n"), method)
        path = target.split("?", 1)[0]
        if not self.matches(path):
            return (*text(404, "not found\n"), method)
        try:
            return (*self.handler(path), method)
        except Exception:
            logger.exception("%s handler failed", self.role)
            return (*text(500, "internal error\n"), method)
