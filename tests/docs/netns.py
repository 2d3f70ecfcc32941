"""Run a shell script in a network namespace of its own, with only a loopback interface.

Documented commands use fixed addresses and ports (127.0.0.1:3478, :8080, :8086). In a fresh
network namespace they run exactly as written without colliding with anything else on this
machine, and nothing they send can leave it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def netns_unavailable() -> str | None:
    """Why no network namespace can be made here, or None."""
    for tool, package in (("unshare", "util-linux"), ("ip", "iproute2"), ("curl", "curl")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        return f"unshare --net is not permitted here: {probe.stderr.strip()}"
    return None


def run_in_netns(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`script` under bash -e in a fresh network namespace, from the repository root, with this
    Python's environment first on PATH. Background jobs are killed when the script ends, and the
    whole process group when it overruns `timeout`."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    wrapper = (
        "set -e\n"
        "ip link set lo up\n"
        "trap 'kill -KILL $(jobs -p) 2>/dev/null || true' EXIT\n"
        f"{script}\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        ["unshare", "--net", "bash", "-c", wrapper],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the script ran over {timeout:.0f}s:\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
