"""Ending the child processes the bench started, by their Popen handle (so by PID)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop(
    proc: subprocess.Popen[Any], sig: int | None = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Send ``sig`` (None: it was already told to go), wait ``timeout``, then kill and reap."""
    if proc.poll() is None and sig is not None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
