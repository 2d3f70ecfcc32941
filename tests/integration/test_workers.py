"""``stunnerd --workers 2``: one metrics endpoint summing both workers, exactly, across restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from testkit.echo import EchoPeer
from testkit.wait import wait_for
from tests.integration.test_cli import Daemon, http_status, wait_until
from tests.support import TurnClient, samples, scrape_async, value

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")


def socket_count(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    return sorted(int(p) for p in out.stdout.split())


async def test_two_workers_sum_exactly_and_survive_a_worker_crash(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    echo = await EchoPeer.start()
    metrics = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    clients: list[TurnClient] = []
    try:
        daemon.start("--workers", "2")
        assert daemon.proc is not None
        workers = children(daemon.proc.pid)
        assert len(workers) == 2
        # Eight clients from distinct source ports: SO_REUSEPORT spreads them over the workers.
        for _ in range(8):
            client = await TurnClient.connect(("127.0.0.1", daemon.udp_port), "UDP")
            await client.send_and_wait(echo.address, 10, 50)
            clients.append(client)

        async def scraped(name: str, direction: str | None = None) -> float:
            return value(samples(await scrape_async(metrics)), name, "udp", direction)

        async def settled(name: str, expected: float, direction: str | None = None) -> None:
            for _ in range(100):
                if await scraped(name, direction) == expected:
                    return
                await wait_for(lambda: True, 0.05)
            assert await scraped(name, direction) == expected

        await settled("stunner_cluster_packets_total", 80, "tx")
        await settled("stunner_cluster_bytes_total", 4000, "rx")
        await settled("stunner_allocations_active", 8)
        await settled("stunner_listener_connections_total", 8)
        before = samples(await scrape_async(metrics))
        allocated = before[_response_key("allocate", "200")]
        assert allocated >= 8  # one success per client (aioice may retransmit)
        assert before[("stunner_listener_ready", (("name", "udp"),))] == 1
        # Process metrics add up the workers: 8 relay sockets are in no supervisor fd.
        assert before[("process_open_fds", ())] >= socket_count(daemon.proc.pid) + 8
        assert before[("python_threads", ())] >= 3

        # Kill the worker holding more relay sockets (so at least 4 of the 8 allocations):
        # its counters stay in the sum, its allocations leave the gauges.
        victim = max(workers, key=socket_count)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            assert daemon.proc is not None
            kids = children(daemon.proc.pid)
            return len(kids) == 2 and victim not in kids

        wait_until(replaced, 15)
        assert await scraped("stunner_cluster_packets_total", "tx") == 80
        assert await scraped("stunner_listener_connections_total") == 8
        assert await scraped("stunner_allocations_active") <= 4
        after = samples(await scrape_async(metrics))
        assert after[_response_key("allocate", "200")] == allocated  # counters survive
        assert after[("process_cpu_seconds_total", ())] >= before[("process_cpu_seconds_total", ())]
        wait_until(lambda: http_status(daemon.url("/ready")) == 200, 15)
    finally:
        for client in clients:
            client.transport.close()
        echo.close()
        stragglers = children(daemon.proc.pid) if daemon.proc else []
        daemon.stop()
        for pid in stragglers:  # they would drain their allocations for the grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start("--workers", "2")
        assert daemon.proc is not None
        workers = children(daemon.proc.pid)
        assert len(workers) == 2
        daemon.proc.kill()  # SIGKILL: no chance to forward anything
        daemon.proc.wait(timeout=10)
        wait_until(lambda: all(not Path(f"/proc/{pid}").exists() for pid in workers), 15)
    finally:
        for pid in workers:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        daemon.stop()


async def test_workers_drain_on_sigterm(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        daemon.start("--workers", "2")
        assert daemon.proc is not None
        workers = children(daemon.proc.pid)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.wait(timeout=15)
        assert daemon.proc.returncode == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        daemon.stop()


def _response_key(method: str, code: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"name": "udp", "method": method, "code": code}
    return "stunner_turn_responses_total", tuple(sorted(labels.items()))
