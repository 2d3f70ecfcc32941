"""Liveness and readiness (``/live``, ``/ready``) for Kubernetes probes.

``/live`` answers 200 while the process runs. ``/ready`` is 200 only while the relay serves:
503 before the first config is running and once a graceful shutdown has begun, so a
Service stops sending new clients here while existing allocations drain.
"""

from __future__ import annotations

from collections.abc import Callable

from .httpd import Response, text


class Health:
    def __init__(self) -> None:
        self.ready = False
        # Extra readiness condition, e.g. "every worker process reports" for a supervisor.
        self.gate: Callable[[], bool] = lambda: True

    def handle(self, path: str) -> Response:
        if path == "/live":
            return text(200, "live\n")
        if path == "/ready":
            ok = self.ready and self.gate()
            return text(200, "ready\n") if ok else text(503, "not ready\n")
        return text(404, "not found\n")
