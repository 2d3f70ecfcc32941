"""Child processes the harness starts (stunnerd, Prometheus): log tails and certain stops."""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a child's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float = 10.0) -> None:
    """Send `sig`; SIGKILL if the process is still there after `timeout` s. Idempotent."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.error("pid %d ignored %s for %ss; killing it", proc.pid, sig.name, timeout)
        proc.kill()
        proc.wait(timeout=timeout)
