"""Live hostile traffic at real UDP, TCP and TLS listeners; the relay keeps serving, exactly.

UDP: 100,000 random and mutated datagrams. Every one must be counted (listener rx packets and
bytes equal what was sent, to the datagram and the byte), the malformed ones logged at debug
level at most once a second, and answers counted as they arrive.
TCP/TLS: garbage, truncated and oversized frames, counted as ``garbage.model_frames`` says.
Throughout, nothing is logged at ERROR and the event loop reports no exception; afterwards an
allocation made before the attack still relays and new ones can be made.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testkit.ports import free_port
from testkit.wait import settle, wait_for
from tests.hardening.garbage import (
    StreamCase,
    is_malformed,
    slowloris_frame,
    stream_cases,
    udp_garbage,
)
from tests.integration.conftest import PROTOCOLS, Gateway, LiveStats
from tests.support import ErrorLog, TurnClient, samples, scrape_async

UDP_DATAGRAMS = 100_000
BATCH = 48  # datagrams in flight at once: well inside the listener socket's receive buffer
SEED = 20240611


@dataclass
class Watch:
    """ERROR (and, on request, malformed-input DEBUG) records, and event-loop errors."""

    errors: ErrorLog
    debug: ErrorLog
    loop_errors: list[dict[str, Any]]

    def assert_clean(self) -> None:
        assert self.errors.messages() == []
        assert self.loop_errors == []


@pytest.fixture
def watch() -> Iterator[Watch]:
    loop = asyncio.get_event_loop()
    errors, debug = ErrorLog(), ErrorLog(logging.DEBUG)
    root = logging.getLogger("stunner")
    turn = logging.getLogger("stunner.turn")
    level = turn.level
    root.addHandler(errors)
    turn.addHandler(debug)
    turn.setLevel(logging.DEBUG)
    w = Watch(errors, debug, [])
    loop.set_exception_handler(lambda _loop, context: w.loop_errors.append(context))
    try:
        yield w
    finally:
        loop.set_exception_handler(None)
        turn.setLevel(level)
        turn.removeHandler(debug)
        root.removeHandler(errors)


def listener_stats(gw: Gateway, protocol: str) -> LiveStats:
    return gw.stats(protocol)


async def metrics(gw: Gateway, protocol: str) -> dict[str, float]:
    """This listener's nine families, scraped over HTTP; directions as name:rx / name:tx."""
    scraped = samples(await scrape_async(gw.metrics_url))
    name = gw.listener_name(protocol)
    out = {}
    for (metric, labels), v in scraped.items():
        lab = dict(labels)
        if metric.startswith("stunner_") and lab.get("name") == name:
            out[metric + (f":{lab['direction']}" if "direction" in lab else "")] = v
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@contextlib.asynccontextmanager
async def clients(gw: Gateway, protocols: tuple[str, ...]) -> AsyncIterator[list[TurnClient]]:
    """One relaying allocation per protocol, closed (and its gauge back down) afterwards."""
    made: list[TurnClient] = []
    base = {p: listener_stats(gw, p).allocations for p in protocols}
    try:
        for protocol in protocols:
            client = await TurnClient.connect(
                ("127.0.0.1", gw.ports[protocol]), protocol, ssl_context=gw.ssl_context()
            )
            made.append(client)
            await client.send_and_wait(gw.echo.address, 5, 64)
        yield made
    finally:
        for client in made:
            await client.close()
        for protocol, count in base.items():
            stats = listener_stats(gw, protocol)
            await settle(lambda s=stats: s.allocations, count)  # type: ignore[misc]


async def still_serving(
    gw: Gateway, existing: list[TurnClient], protocols: tuple[str, ...]
) -> None:
    """Old allocations relay, and new ones can be made and relay."""
    for client in existing:
        await client.send_and_wait(gw.echo.address, 10, 100)
    async with clients(gw, protocols) as fresh:
        for client in fresh:
            await client.send_and_wait(gw.echo.address, 10, 100)


@dataclass
class Flood:
    sent: int = 0
    sent_bytes: int = 0
    malformed: int = 0
    answers: int = 0
    answer_bytes: int = 0
    seconds: float = 0.0


async def flood_udp(gw: Gateway, count: int, seed: int) -> Flood:
    """Send ``count`` hostile datagrams in paced batches, reading every answer."""
    stats = listener_stats(gw, "UDP")
    target = ("127.0.0.1", gw.ports["UDP"])
    result = Flood()
    rx0, tx0 = stats.rx_packets, stats.tx_packets
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        def drain() -> int:
            """Read every answer waiting; returns the answers read so far."""
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    return result.answers
                result.answers += 1
                result.answer_bytes += len(data)

        async def caught_up() -> None:
            await settle(lambda: stats.rx_packets - rx0, result.sent, 10.0, interval=0)
            drain()

        for datagram in udp_garbage(seed, count):
            sock.sendto(datagram, target)
            result.sent += 1
            result.sent_bytes += len(datagram)
            result.malformed += is_malformed(datagram)
            if result.sent % BATCH == 0:
                await caught_up()
        await caught_up()
        # Answers are sent synchronously with each request; the last ones may still be queued.
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: drain() >= stats.tx_packets - tx0, 5.0)
    result.seconds = time.monotonic() - started
    return result


async def test_udp_listener_survives_100k_hostile_datagrams_and_counts_exactly(
    gateway: Gateway, watch: Watch
) -> None:
    async with clients(gateway, ("UDP",)) as existing:
        before = await metrics(gateway, "UDP")
        flood = await flood_udp(gateway, UDP_DATAGRAMS, SEED)
        after = await metrics(gateway, "UDP")
        watch.assert_clean()
        assert flood.sent == UDP_DATAGRAMS
        # Every datagram counted, to the byte; every answer counted; nothing relayed.
        assert delta(after, before) == {
            "stunner_listener_packets_total:rx": flood.sent,
            "stunner_listener_bytes_total:rx": flood.sent_bytes,
            "stunner_listener_packets_total:tx": flood.answers,
            "stunner_listener_bytes_total:tx": flood.answer_bytes,
        }
        # Logged at debug level, at most once a second.
        logged = [r for r in watch.debug.records if "malformed" in r.getMessage()]
        assert 1 <= len(logged) <= math.ceil(flood.seconds) + 1
        assert all(r.levelno == logging.DEBUG for r in logged)
        await still_serving(gateway, existing, ("UDP",))
    print(
        f"\nUDP flood: {flood.sent} datagrams, {flood.sent_bytes} bytes, {flood.malformed} "
        f"malformed, {flood.answers} answers ({flood.answer_bytes} bytes) in "
        f"{flood.seconds:.1f} s; {len(logged)} debug lines"
    )
    watch.assert_clean()


async def open_stream(gw: Gateway, protocol: str) -> tuple[asyncio.StreamReader, Any]:
    ssl_ctx = gw.ssl_context() if protocol == "TLS" else None
    return await asyncio.open_connection("127.0.0.1", gw.ports[protocol], ssl=ssl_ctx)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the relay has closed the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except TimeoutError:  # before OSError, of which it is a subclass
        return False
    except (ConnectionError, OSError):
        return True
    return True


async def run_case(gw: Gateway, protocol: str, case: StreamCase) -> tuple[int, int]:
    """One hostile connection; asserts its exact rx/tx counts. Returns (packets, bytes) rx."""
    stats = listener_stats(gw, protocol)
    p0, b0, t0 = stats.rx_packets, stats.rx_bytes, stats.tx_bytes
    c0, total0 = stats.connections, stats.connections_total
    reader, writer = await open_stream(gw, protocol)
    await settle(lambda: stats.connections_total, total0 + 1)
    packets, size, closes = case.expected()
    for chunk in case.writes:
        writer.write(chunk)
        await writer.drain()
    await settle(lambda: (stats.rx_packets - p0, stats.rx_bytes - b0), (packets, size))
    answered = 0
    if not closes:
        while answered < stats.tx_bytes - t0:  # read back every answer the relay counted
            answered += len(await asyncio.wait_for(reader.read(65536), 5.0))
        assert answered == stats.tx_bytes - t0, case.name
    else:
        assert await closed_by_peer(reader, 5.0), f"{case.name}: not closed"
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
    await settle(lambda: stats.connections, c0)
    return packets, size


@pytest.mark.parametrize("protocol", ["TCP", "TLS"])
async def test_stream_listener_survives_garbage_and_counts_exactly(
    gateway: Gateway, watch: Watch, protocol: str
) -> None:
    async with clients(gateway, (protocol,)) as existing:
        before = await metrics(gateway, protocol)
        cases = stream_cases(SEED)
        packets = size = 0
        for case in cases:
            p, b = await run_case(gateway, protocol, case)
            packets, size = packets + p, size + b
        after = await metrics(gateway, protocol)
        changed = delta(after, before)
        assert changed["stunner_listener_packets_total:rx"] == packets
        assert changed["stunner_listener_bytes_total:rx"] == size
        assert changed["stunner_listener_connections_total"] == len(cases)
        assert not any(k.startswith("stunner_cluster") for k in changed)
        assert "stunner_listener_connections" not in changed
        await still_serving(gateway, existing, (protocol,))
    print(f"\n{protocol} garbage: {len(cases)} connections, {packets} frames, {size} bytes")
    watch.assert_clean()


async def drip(gw: Gateway, protocol: str, data: bytes, pause: float) -> bool:
    """Slowloris: one byte at a time; True if the relay closed the connection first."""
    reader, writer = await open_stream(gw, protocol)
    closed = asyncio.ensure_future(closed_by_peer(reader, 60.0))
    try:
        for byte in data:
            if closed.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(closed, 5.0)
    finally:
        closed.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def silent_tcp(gw: Gateway, protocol: str, timeout: float = 15.0) -> bool:
    """A connection that never speaks (for TLS: never starts the handshake)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports[protocol])
    try:
        return await closed_by_peer(reader, timeout)
    finally:
        writer.close()


async def with_limits(gw: Gateway, restart_tls: bool = False, **limits: int) -> None:
    """Apply ``admin.limits``; optionally move the TLS listener so that its socket restarts."""
    config = copy.deepcopy(gw.config)
    config["admin"]["limits"] = limits
    if restart_tls:
        tls = next(lis for lis in config["listeners"] if lis["protocol"] == "TLS")
        tls["port"] = gw.ports["TLS"] = free_port()
    await gw.apply(config)


async def test_slowloris_and_silent_connections_are_cut_allocations_are_not(
    gateway: Gateway, watch: Watch
) -> None:
    await with_limits(gateway, restart_tls=True, tcp_idle_timeout=2, tls_handshake_timeout=1)
    streams = ("TCP", "TLS")
    async with clients(gateway, streams) as existing:
        # Allocated connections, idle from here on, outlive the idle timeout; drips do not.
        attackers = [drip(gateway, p, slowloris_frame(), 0.05) for p in streams for _ in range(8)]
        attackers += [silent_tcp(gateway, p) for p in streams for _ in range(4)]
        attack = asyncio.gather(*attackers)
        async with clients(gateway, streams) as during:
            for client in during:
                await client.send_and_wait(gateway.echo.address, 10, 100)
        cut = await attack
        assert cut == [True] * len(attackers)
        for protocol in streams:
            assert listener_stats(gateway, protocol).connections == 1  # the allocated one
        await still_serving(gateway, existing, streams)
    watch.assert_clean()


async def test_connections_per_source_are_capped(gateway: Gateway, watch: Watch) -> None:
    await with_limits(gateway, tcp_connections_per_source=5)
    stats = listener_stats(gateway, "TCP")
    conns = [await asyncio.open_connection("127.0.0.1", gateway.ports["TCP"]) for _ in range(8)]
    try:
        closed = await asyncio.gather(*(closed_by_peer(r, 1.0) for r, _ in conns))
        assert closed.count(True) == 3 and closed[:5] == [False] * 5
        await settle(lambda: stats.connections, 5)
        assert stats.connections_total == 8
    finally:
        for _, writer in conns:
            writer.close()
    await settle(lambda: stats.connections, 0)
    assert [listener_stats(gateway, p).connections for p in PROTOCOLS] == [0, 0, 0]
    watch.assert_clean()
