"""Liveness and readiness (``/live``, ``/ready``) for Kubernetes probes.

``/live`` answers 200 while the process runs. ``/ready`` is 200 only while the relay serves:
503 before the first config is running, once a graceful shutdown has begun (so a Service stops
sending new clients here while existing allocations drain), and while any configured listener
is not serving, with one line per such listener saying why.
"""

from __future__ import annotations

from collections.abc import Callable

from .httpd import Response, text


class Health:
    def __init__(self) -> None:
        self.ready = False
        # Extra readiness condition, e.g. "every worker process reports" for a supervisor.
        self.gate: Callable[[], bool] = lambda: True
        # Why the relay does not serve fully although a config runs (e.g. a port is taken).
        self.problems: Callable[[], list[str]] = list

    def handle(self, path: str) -> Response:
        if path == "/live":
            return text(200, "live\n")
        if path == "/ready":
            if not (self.ready and self.gate()):
                return text(503, "not ready\n")
            problems = self.problems()
            if problems:
                return text(503, "".join(f"not ready: {line}\n" for line in problems))
            return text(200, "ready\n")
        return text(404, "not found\n")
