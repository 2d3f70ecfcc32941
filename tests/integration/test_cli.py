"""stunnerd as users run it: a subprocess, signals, health, one-line errors, promtool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aioice.stun import TransactionFailed

from testkit.echo import EchoPeer
from testkit.ports import free_port
from testkit.wait import wait_for, wait_until
from tests.support import TurnClient, scrape

STUNNERD = [sys.executable, "-m", "stunner.cli.stunnerd"]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class Daemon:
    def __init__(self, tmp_path: Path, metrics: bool = True) -> None:
        self.udp_port = free_port()
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.path = tmp_path / "stunnerd.conf"
        self.config = {
            "version": "v1alpha1",
            "admin": {
                "metrics_endpoint": f"http://127.0.0.1:{self.metrics_port}/metrics"
                if metrics
                else "",
                "healthcheck_endpoint": f"http://127.0.0.1:{self.health_port}",
            },
            "auth": {"credentials": {"username": "user1", "password": "pass1"}},
            "listeners": [
                {
                    "name": "udp",
                    "protocol": "UDP",
                    "address": "127.0.0.1",
                    "port": self.udp_port,
                    "routes": ["backend"],
                }
            ],
            "clusters": [{"name": "backend", "endpoints": ["127.0.0.1"]}],
        }
        self.path.write_text(yaml.safe_dump(self.config))
        self.log = tmp_path / "stunnerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*STUNNERD, "-c", str(self.path), "-w", *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: http_status(self.url("/ready")) == 200)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    try:
        yield d
    finally:
        d.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STUNNERD, *args], capture_output=True, text=True, timeout=30)


def test_bad_argument_is_one_line() -> None:
    result = run_cli("--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["stunnerd: error: unrecognized arguments: --no-such-flag"]
    result = run_cli()
    assert result.stderr.splitlines() == ["stunnerd: error: give either -c FILE or a turn:// URI"]


def test_dry_run(tmp_path: Path) -> None:
    good = Daemon(tmp_path)
    result = run_cli("-d", "-c", str(good.path))
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text(
        "version: v1alpha1\nauth: {credentials: {username: u, password: p}}\n"
        "listeners: [{name: l, port: 70000}]\n"
    )
    result = run_cli("-d", "-c", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"stunnerd: error: {bad}: listeners[0].port: must be an integer 1-65535, got 70000"
    ]
    result = run_cli("-d", "-c", str(tmp_path / "missing.conf"))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1


def test_version() -> None:
    result = run_cli("--version")
    assert result.stdout.strip() == "stunnerd 0.1.0"


async def test_sigterm_drains_allocations_then_exits(daemon: Daemon) -> None:
    daemon.start()
    echo = await EchoPeer.start()
    try:
        client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
        await client.send_and_wait(echo.address, 5, 20)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: http_status(daemon.url("/ready")) == 503, 10)
        assert http_status(daemon.url("/live")) == 200
        # The existing allocation keeps relaying while the process drains...
        await client.send_and_wait(echo.address, 5, 20)
        assert daemon.proc.poll() is None
        # ...and new allocations are refused.
        with pytest.raises(Exception, match="508"):
            await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
        await client.close()
        await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 10)
        assert daemon.proc.returncode == 0
    finally:
        echo.close()


async def test_sigterm_grace_period_ends_the_wait(daemon: Daemon) -> None:
    daemon.start("--grace-period", "1")
    client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
    assert daemon.proc is not None
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 10)
    assert time.monotonic() - started >= 1.0
    client.transport.close()


async def test_sigint_exits_at_once(daemon: Daemon) -> None:
    daemon.start()
    client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGINT)
    await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 5)
    client.transport.close()


def test_metrics_are_off_by_default_and_turned_on_live(tmp_path: Path) -> None:
    d = Daemon(tmp_path, metrics=False)
    try:
        d.start()
        metrics_url = f"http://127.0.0.1:{d.metrics_port}/metrics"
        assert http_status(metrics_url) == 0  # nothing listens
        d.config["admin"]["metrics_endpoint"] = f"http://127.0.0.1:{d.metrics_port}/metrics"
        d.path.write_text(yaml.safe_dump(d.config))
        wait_until(lambda: http_status(metrics_url) == 200)
        assert http_status(f"http://127.0.0.1:{d.metrics_port}/other") == 404
        text = scrape(metrics_url)
        assert 'stunner_listener_connections{name="udp"} 0.0' in text
        assert "_created" not in text
        assert "process_open_fds" in text and "python_gc_objects_collected_total" in text
    finally:
        d.stop()


def test_promtool_accepts_the_exposition(daemon: Daemon) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run must install Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    daemon.start()
    text = scrape(f"http://127.0.0.1:{daemon.metrics_port}/metrics")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_quick_start_uri(tmp_path: Path) -> None:
    """One listener, any peer... except special addresses: loopback needs explicit naming."""
    port = free_port()
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*STUNNERD, f"turn://user1:pass1@127.0.0.1:{port}?transport=udp"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: b"serving UDP on 127.0.0.1" in log.read_bytes())
        import asyncio

        async def allocate_and_bind() -> int:
            echo = await EchoPeer.start()
            try:
                client = await TurnClient.connect(("127.0.0.1", port), "UDP")
                try:
                    await client.protocol.channel_bind(0x4000, echo.address)
                except TransactionFailed as exc:
                    return int(exc.response.attributes["ERROR-CODE"][0])
                finally:
                    await client.close()
                return 0
            finally:
                echo.close()

        assert asyncio.run(allocate_and_bind()) == 403
        assert b"metrics server" not in log.read_bytes()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_watch_waits_for_a_missing_file(tmp_path: Path) -> None:
    """On Kubernetes the ConfigMap may appear after the pod starts: wait, then serve."""
    d = Daemon(tmp_path)
    text = d.path.read_text()
    d.path.unlink()
    log = tmp_path / "waiting.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*STUNNERD, "-c", str(d.path), "-w"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: b"waiting for a valid config" in log.read_bytes())
        assert proc.poll() is None
        d.path.write_text(text)
        wait_until(lambda: http_status(d.url("/ready")) == 200)
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_sigint_during_a_drain_exits_at_once(daemon: Daemon) -> None:
    daemon.start()
    client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: http_status(daemon.url("/ready")) == 503, 10)
    assert daemon.proc.poll() is None  # draining: the allocation holds it
    daemon.proc.send_signal(signal.SIGINT)
    await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 5)
    client.transport.close()
