"""Liveness and readiness (``/live``, ``/ready``) for Kubernetes probes.

``/live`` answers 200 while the process runs. ``/ready`` is 200 only while the relay serves:
503 before the first config is running and once a graceful shutdown has begun, so a
Service stops sending new clients here while existing allocations drain.
"""

from __future__ import annotations

from .httpd import Response, text


class Health:
    def __init__(self) -> None:
        self.ready = False

    def handle(self, path: str) -> Response:
        if path == "/live":
            return text(200, "live\n")
        if path == "/ready":
            return text(200, "ready\n") if self.ready else text(503, "not ready\n")
        return text(404, "not found\n")
