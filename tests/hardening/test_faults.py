"""Faults around the relay: taken ports, broken config files, DNS outages, SIGTERM under load,
a killed and restarted process. The relay keeps serving and says what happened, once.

Subprocess tests run stunnerd as users do (``tests.integration.test_cli.Daemon``); the others
use the in-process gateway, where the fault can be injected exactly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aioice.stun import TransactionFailed

from stunner.watcher import ConfigWatcher
from testkit.echo import EchoPeer
from testkit.ports import free_port
from testkit.wait import settle, wait_for
from tests.integration.conftest import Gateway
from tests.integration.test_cli import Daemon, http_status
from tests.support import (
    ErrorLog,
    TurnClient,
    client_ssl_context,
    samples,
    scrape_async,
    self_signed_cert,
    value,
)

STREAMS = ("TCP", "TLS")


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 held by someone else (listening, never answering)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@contextlib.contextmanager
def records(logger: str, level: int) -> Iterator[ErrorLog]:
    log = ErrorLog(level)
    target = logging.getLogger(logger)
    target.addHandler(log)
    try:
        yield log
    finally:
        target.removeHandler(log)


def log_lines(daemon: Daemon, needle: str) -> list[str]:
    return [line for line in daemon.log.read_text().splitlines() if needle in line]


# Taken admin ports


def test_taken_metrics_port_is_one_log_line_and_the_relay_runs(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    config: dict[str, Any] = daemon.config
    with taken_port() as port:
        config["admin"]["metrics_endpoint"] = f"http://127.0.0.1:{port}/metrics"
        daemon.path.write_text(yaml.safe_dump(daemon.config))
        try:
            daemon.start()  # /ready answers: health is independent of metrics

            async def relay() -> None:
                echo = await EchoPeer.start()
                client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
                await client.send_and_wait(echo.address, 5, 50)
                await client.close()
                echo.close()

            asyncio.run(relay())
            lines = log_lines(daemon, "metrics server cannot listen")
            assert len(lines) == 1, daemon.log.read_text()
            assert f"127.0.0.1:{port}" in lines[0] and "keeps running" in lines[0]
            assert "Traceback" not in daemon.log.read_text()
        finally:
            daemon.stop()


async def test_taken_health_port_is_one_log_line_and_moving_it_recovers(
    gateway: Gateway,
) -> None:
    with taken_port() as port, records("stunner", logging.WARNING) as warnings:
        config = copy.deepcopy(gateway.config)
        config["admin"]["healthcheck_endpoint"] = f"http://127.0.0.1:{port}"
        await gateway.apply(config)
        messages = [m for m in warnings.messages() if "health server cannot listen" in m]
        assert len(messages) == 1 and f"127.0.0.1:{port}" in messages[0]
        client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
        await client.send_and_wait(gateway.echo.address, 5, 50)
        # The operator moves it to a free port: only the health server starts, relay untouched.
        fresh = free_port()
        config["admin"]["healthcheck_endpoint"] = f"http://127.0.0.1:{fresh}"
        await gateway.apply(config)
        status = await asyncio.to_thread(http_status, f"http://127.0.0.1:{fresh}/ready")
        assert status == 200
        await client.send_and_wait(gateway.echo.address, 5, 50)
        await client.close()


# The watched config file


def udp_echo_loop_task(client: TurnClient, peer: tuple[str, int]) -> Any:
    """Relay continuously (10 echoes per round) until cancelled; counts rounds."""
    rounds = [0]

    async def loop() -> None:
        while True:
            await client.send_and_wait(peer, 10, 40)
            rounds[0] += 1

    return asyncio.ensure_future(loop()), rounds


async def test_broken_config_files_keep_the_last_good_config_running(tmp_path: Path) -> None:
    """stunnerd -w while the file is truncated, emptied, made invalid, deleted, then fixed."""
    daemon = Daemon(tmp_path)
    good = yaml.safe_dump(daemon.config, sort_keys=False)
    broken = {
        "truncated": good[: good.index("listeners:")] + "listeners:\n- name: udp\n  protoc",
        "empty": "",
        "not yaml": "version: v1alpha1\nadmin: [unclosed\n",
        "invalid": good.replace(f"port: {daemon.udp_port}", "port: 99999"),
        "binary": "\x00\x01garbage\xff",
    }
    echo = await EchoPeer.start()
    task = None
    try:
        await asyncio.to_thread(daemon.start)
        client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
        task, rounds = udp_echo_loop_task(client, echo.address)
        for name, text in broken.items():
            daemon.path.write_text(text)
            await settle(
                lambda: len(log_lines(daemon, "config rejected")), list(broken).index(name) + 1
            )
            seen = rounds[0]
            await wait_for(lambda s=seen: rounds[0] >= s + 2, 10)  # type: ignore[misc]
            assert not task.done(), name
        daemon.path.unlink()
        await wait_for(lambda: bool(log_lines(daemon, "cannot read config")), 10)
        assert await asyncio.to_thread(http_status, daemon.url("/ready")) == 200
        # Fixed, with a change: a second listener. The running allocation is untouched.
        second = free_port()
        fixed: dict[str, Any] = copy.deepcopy(daemon.config)
        fixed["listeners"].append({**fixed["listeners"][0], "name": "udp-2", "port": second})
        daemon.path.write_text(yaml.safe_dump(fixed))
        other = await _connect_with_retry(("127.0.0.1", second), "UDP")
        await other.send_and_wait(echo.address, 5, 40)
        await other.close()
        seen = rounds[0]
        await wait_for(lambda: rounds[0] >= seen + 2, 10)
        # Each bad version was reported once, not at every poll.
        log = daemon.log.read_text()
        assert len(log_lines(daemon, "config rejected")) == len(broken), log
        assert len(log_lines(daemon, "cannot read config")) == 1, log
        assert "Traceback" not in log
    finally:
        if task is not None:
            task.cancel()
        daemon.stop()
        echo.close()


async def _connect_with_retry(server: tuple[str, int], protocol: str) -> TurnClient:
    """Connect once the listener is up (it starts when the watcher applies the file)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await TurnClient.connect(server, protocol)
        except (OSError, TransactionFailed, ConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_half_written_but_valid_prefix_is_not_applied(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A non-atomic writer caught mid-file: cut after ``listeners:``, the text is a valid
    config with no listeners; applying it would drop every allocation."""
    path = tmp_path / "stunnerd.conf"
    text = yaml.safe_dump(gateway.config, sort_keys=False)
    path.write_text(text)
    watcher = gateway.watch(path)
    assert await applied(watcher)
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    try:
        path.write_text(text[: text.index("listeners:") + len("listeners:\n")])
        await watcher.check_once()  # one poll sees the half-written file...
        path.write_text(text.replace("it-stunnerd", "it-stunnerd-2"))  # ...the writer finishes
        assert await applied(watcher)
        assert gateway.stunner.config is not None
        assert gateway.stunner.config.admin.name == "it-stunnerd-2"
        await client.send_and_wait(gateway.echo.address, 5, 40, timeout=3)
    finally:
        await client.close()


async def applied(watcher: ConfigWatcher, polls: int = 4) -> bool:
    """Poll as stunnerd -w does until a new config is applied (a few polls at most)."""
    for _ in range(polls):
        if await watcher.check_once():
            return True
    return False


# DNS


async def test_cluster_name_that_stops_resolving_keeps_its_last_addresses(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    answers: dict[str, str | None] = {"media.stunner.test": "127.0.0.1"}

    async def getaddrinfo(host: str, port: Any, **_: Any) -> list[Any]:
        ip = answers.get(host)
        if ip is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (ip, 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    config = copy.deepcopy(gateway.config)
    config["clusters"] = [
        {"name": "stunner/media-plane", "type": "STRICT_DNS", "endpoints": ["media.stunner.test"]}
    ]
    await gateway.apply(config)
    cluster = gateway.stunner.clusters["stunner/media-plane"]
    assert cluster.endpoints == ("127.0.0.1",)
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    try:
        await client.send_and_wait(gateway.echo.address, 5, 40)
        answers["media.stunner.test"] = None  # the name stops resolving
        with records("stunner.cluster", logging.WARNING) as warnings:
            await cluster.resolve_once()
        assert warnings.messages() == [
            "cluster stunner/media-plane: cannot resolve media.stunner.test "
            "([Errno -2] Name or service not known), keeping 1 last known address(es)"
        ]
        assert cluster.endpoints == ("127.0.0.1",)
        await client.send_and_wait(gateway.echo.address, 5, 40)
        fresh = await TurnClient.connect(("127.0.0.1", gateway.ports["TCP"]), "TCP")
        await fresh.send_and_wait(gateway.echo.address, 5, 40)  # new permissions still granted
        await fresh.close()
        answers["media.stunner.test"] = "127.0.0.2"  # back, somewhere else
        await cluster.resolve_once()
        assert cluster.endpoints == ("127.0.0.2",)
    finally:
        await client.close()


# SIGTERM under load


def three_listeners(daemon: Daemon, tmp_path: Path) -> dict[str, int]:
    """Add TCP and TLS listeners to the daemon's config; returns protocol -> port."""
    cert, key = self_signed_cert(tmp_path)
    ports = {"UDP": daemon.udp_port}
    config: dict[str, Any] = daemon.config
    base = config["listeners"][0]
    for protocol in STREAMS:
        ports[protocol] = free_port()
        extra: dict[str, Any] = {**base, "name": protocol.lower(), "protocol": protocol}
        extra["port"] = ports[protocol]
        if protocol == "TLS":
            extra["cert"] = base64.b64encode(cert).decode()
            extra["key"] = base64.b64encode(key).decode()
        config["listeners"].append(extra)
    daemon.path.write_text(yaml.safe_dump(daemon.config))
    return ports


class Load:
    """Clients on every listener, each relaying 10-echo rounds until stopped."""

    def __init__(self) -> None:
        self.clients: list[TurnClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.rounds: list[int] = []
        self.failures: list[BaseException] = []

    async def start(self, ports: dict[str, int], ssl_ctx: Any, peer: Any, per: int) -> None:
        for protocol, port in ports.items():
            for _ in range(per):
                client = await TurnClient.connect(
                    ("127.0.0.1", port), protocol, ssl_context=ssl_ctx
                )
                self.clients.append(client)
                self.rounds.append(0)
                self.tasks.append(asyncio.ensure_future(self._run(len(self.clients) - 1, peer)))

    async def _run(self, index: int, peer: Any) -> None:
        try:
            while True:
                await self.clients[index].send_and_wait(peer, 10, 60, timeout=5)
                self.rounds[index] += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # recorded: the test decides whether it was expected
            self.failures.append(exc)

    def snapshot(self) -> list[int]:
        return list(self.rounds)

    async def stop(self, close: bool = True) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if close:
            for client in self.clients:
                await client.close()


@contextlib.asynccontextmanager
async def loaded_daemon(
    tmp_path: Path, *extra: str, per: int = 2
) -> AsyncIterator[tuple[Daemon, dict[str, int], Load, EchoPeer]]:
    daemon = Daemon(tmp_path)
    ports = three_listeners(daemon, tmp_path)
    echo = await EchoPeer.start()
    load = Load()
    try:
        await asyncio.to_thread(daemon.start, *extra)
        cert = (tmp_path / "cert.pem").read_bytes()
        await load.start(ports, client_ssl_context(cert), echo.address, per)
        yield daemon, ports, load, echo
    finally:
        await load.stop(close=False)
        for client in load.clients:
            client.transport.close()
        daemon.stop()
        echo.close()


async def progressed(load: Load, rounds: int = 2, timeout: float = 15.0) -> None:
    """Every client completes ``rounds`` more rounds (no echo lost)."""
    base = load.snapshot()
    await wait_for(
        lambda: all(now >= b + rounds for now, b in zip(load.snapshot(), base, strict=True)),
        timeout,
    )
    assert load.failures == []


async def refused_everywhere(ports: dict[str, int], ssl_ctx: Any) -> None:
    for protocol, port in ports.items():
        with pytest.raises(TransactionFailed, match="508"):
            await TurnClient.connect(("127.0.0.1", port), protocol, ssl_context=ssl_ctx)


async def test_sigterm_under_load_drains_until_the_last_allocation_ends(tmp_path: Path) -> None:
    async with loaded_daemon(tmp_path) as (daemon, ports, load, echo):
        ssl_ctx = client_ssl_context((tmp_path / "cert.pem").read_bytes())
        await progressed(load)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: http_status(daemon.url("/ready")) == 503, 10)
        await refused_everywhere(ports, ssl_ctx)
        await progressed(load)  # existing allocations relay on, every one of them
        # Clients leave one by one; the process stays until the last one is gone.
        await load.stop(close=False)
        for client in load.clients[:-1]:
            await client.close()
        await progressed_one(load.clients[-1], echo.address)
        assert daemon.proc.poll() is None
        await load.clients[-1].close()
        await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 15)
        assert daemon.proc.returncode == 0


async def progressed_one(client: TurnClient, peer: Any) -> None:
    await client.send_and_wait(peer, 10, 60, timeout=5)


async def test_sigterm_under_load_ends_when_the_grace_period_runs_out(tmp_path: Path) -> None:
    async with loaded_daemon(tmp_path, "--grace-period", "3") as (daemon, ports, load, _):
        ssl_ctx = client_ssl_context((tmp_path / "cert.pem").read_bytes())
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await refused_everywhere(ports, ssl_ctx)
        await progressed(load, rounds=1)  # relaying through the grace period...
        await wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, 15)
        assert daemon.proc.returncode == 0  # ...which ended it, with allocations still open
        log = daemon.log.read_text()
        assert "graceful shutdown: 6 allocation(s) left" in log, log


# A killed and restarted stunnerd: counters restart from 0, which Prometheus sees as a reset.


async def echo_through(daemon: Daemon, echo: EchoPeer, count: int) -> None:
    client = await _connect_with_retry(("127.0.0.1", daemon.udp_port), "UDP")
    await client.send_and_wait(echo.address, count, 30)
    await client.close()


async def cluster_tx(daemon: Daemon) -> float:
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    return value(samples(await scrape_async(url)), "stunner_cluster_packets_total", "udp", "tx")


async def test_killed_and_restarted_stunnerd_starts_counters_from_zero(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    echo = await EchoPeer.start()
    try:
        await asyncio.to_thread(daemon.start)
        await echo_through(daemon, echo, 10)
        assert await cluster_tx(daemon) == 10
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)
        await asyncio.to_thread(daemon.start)
        assert await cluster_tx(daemon) == 0  # lower than before: a counter reset
        await echo_through(daemon, echo, 3)
        assert await cluster_tx(daemon) == 3
    finally:
        daemon.stop()
        echo.close()


@pytest.mark.slow
async def test_prometheus_sees_one_counter_reset_after_a_kill_and_restart(
    tmp_path: Path,
) -> None:
    """Through a real Prometheus: ``resets()`` = 1 and ``increase()`` counts across it."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    from e2e.prom import PrometheusServer, ScrapeTarget
    from e2e.scrape_source import ScrapeSpec

    daemon = Daemon(tmp_path)
    spec = ScrapeSpec(daemon.metrics_port, "/metrics", "1s", "stunner", "hardening test")
    prom = PrometheusServer(binary, tmp_path / "prom", spec)
    echo = await EchoPeer.start()
    series = 'stunner_cluster_packets_total{direction="tx",name="udp"}'

    async def seen(expr: str) -> float | None:
        rows = await asyncio.to_thread(prom.client.query, expr)
        return rows[0][1] if rows else None

    try:
        await asyncio.to_thread(daemon.start)
        await asyncio.to_thread(prom.start, [ScrapeTarget(f"127.0.0.1:{daemon.metrics_port}")])
        await echo_through(daemon, echo, 10)
        await _until(lambda: seen(series), 10.0)
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)
        await asyncio.to_thread(daemon.start)
        await echo_through(daemon, echo, 3)
        await _until(lambda: seen(series), 3.0)
        assert await seen(f"resets({series}[5m])") == 1
        # increase() spans the reset: 10 before, 3 after (extrapolation off at these edges).
        assert await seen(f"max_over_time({series}[5m])") == 10
    finally:
        prom.stop()
        daemon.stop()
        echo.close()


async def _until(read: Any, expected: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await read()
        if last == expected:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus saw {last}, expected {expected}")


async def test_udp_listener_restart_on_the_same_port_keeps_serving(gateway: Gateway) -> None:
    config = copy.deepcopy(gateway.config)
    config["listeners"][0]["address"] = "0.0.0.0"
    await gateway.apply(config)
    assert gateway.listener_name("UDP") in gateway.stunner.listeners
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 3, 20)
    await client.close()
