"""A tiny HTTP target serving a fixed exposition, to prove the Prometheus wiring by itself.

The harness self-test uses it to show that file_sd, the chart's path/interval, freshness
polling and the checks work (and fail) before any stunnerd exists.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from e2e import contract


class StaticTarget:
    """Serves `contract` families for one listener `name` with values the test sets."""

    def __init__(self, host: str, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.values: dict[tuple[str, str], float] = {}
        for fam in contract.ALL:
            for key in contract.keys_for(fam, name):
                self.values[(fam.name, key.direction)] = 0.0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != owner.path:
                    self.send_error(404)
                    return
                body = owner.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def set(self, family: str, value: float, direction: str = "") -> None:
        with self._lock:
            self.values[(family, direction)] = value

    def exposition(self) -> str:
        lines: list[str] = []
        with self._lock:
            values = dict(self.values)
        for fam in contract.ALL:
            lines.append(f"# HELP {fam.name} {fam.help}")
            lines.append(f"# TYPE {fam.name} {fam.type}")
            for key in contract.keys_for(fam, self.name):
                labels = f'name="{self.name}"'
                if key.direction:
                    labels = f'direction="{key.direction}",{labels}'
                lines.append(f"{fam.name}{{{labels}}} {values[(fam.name, key.direction)]}")
        return "\n".join(lines) + "\n"

    def __enter__(self) -> StaticTarget:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
