"""A deleted allocation, and a closed TCP/TLS connection, are freed by reference counting alone.

Why it matters: stunnerd freezes its long-lived objects out of the collector's reach
(stunner.gcpolicy), so that a full collection does not walk every live allocation. A frozen
object that dies in a reference cycle is never freed; one freed by its reference count is. So
these tests run with the collector off and look for the objects of a finished call among those
the collector tracks: there must be none.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from bench.driver import AllocationDriver
from stunner.gcpolicy import GcPolicy
from stunner.listener import StreamConnectionProtocol
from stunner.tls import TlsServerProtocol
from stunner.turn import Allocation, DatagramClient, DeleteReason, StreamClient
from stunner.turn.datapath import RelayReceiver, StreamEgress, StreamIngress
from stunner.udp import DatagramSocket
from testkit.wait import wait_for
from tests.integration.conftest import PROTOCOLS, Gateway
from tests.support import TurnClient

# The objects one call leaves behind if anything holds them in a cycle.
CALL_TYPES = (
    Allocation,
    DatagramClient,
    StreamClient,
    DatagramSocket,
    RelayReceiver,
    StreamEgress,
    StreamIngress,
    StreamConnectionProtocol,
    TlsServerProtocol,
)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()  # what earlier tests left is not this test's
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def left_behind() -> dict[str, int]:
    """The call objects alive (or dead in a cycle, not yet collected), by type."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, CALL_TYPES):
            name = type(obj).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_finished_call_is_freed_without_the_collector(
    gateway: Gateway, protocol: str, collector_off: None
) -> None:
    stats = gateway.stats(protocol)
    before = left_behind()  # the listeners' own sockets
    server = ("127.0.0.1", gateway.ports[protocol])
    clients = [
        await TurnClient.connect(server, protocol, ssl_context=gateway.ssl_context())
        for _ in range(3)
    ]
    assert stats.allocations == 3
    assert left_behind() != before  # the live calls are there: the census sees them
    for client in clients:
        # A channel (aioice binds one on first send), a permission, traffic both ways.
        await client.send_and_wait(gateway.echo.address, 10, 100)
    for client in clients:
        await client.close()
    await wait_for(lambda: stats.allocations == 0 and stats.connections == 0)
    await asyncio.sleep(0.05)  # the transports' last callbacks (connection_lost) have run
    assert left_behind() == before
    del clients


async def test_an_expired_allocation_is_freed_without_the_collector(
    gateway: Gateway, collector_off: None
) -> None:
    stats = gateway.stats("UDP")
    before = left_behind()
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 10, 100)
    server = gateway.stunner.listeners[gateway.listener_name("UDP")].server
    (alloc,) = server.allocations.values()
    server.sweep(alloc.expires_at)  # its lifetime is over
    assert stats.allocations == 0
    del alloc
    assert left_behind() == before
    await client.close()


ALLOCATIONS = 200
TRACKED_PER_UDP_ALLOCATION = 15
"""What one live UDP allocation (with a permission and a channel) adds to the objects the
collector tracks, measured: the Allocation, its DatagramClient, the relay socket (its Python
socket, the DatagramSocket and that one's bound ``sendto``), the RelayReceiver with its
bound ``drain``, its run sender (a partial of a bound method, with its argument tuple) and the
sockaddr it addresses the client by, and the event loop's reader (here asyncio's: a
SelectorKey, its (reader, writer) tuple, a Handle and a Context; under uvloop, as stunnerd
runs, a UVPoll, a Handle and a Context: 14 in all). Tuples and dicts of plain values do not
count: the collector stops tracking them once they survive a collection."""


def udp_driver(gateway: Gateway) -> AllocationDriver:
    """Allocations on the UDP listener as browsers make them: a permission, then a channel."""
    return AllocationDriver(
        ("127.0.0.1", gateway.ports["UDP"]),
        "user1",
        "pass1",
        gateway.echo.address,
        create_permission=True,
    )


async def test_tracked_objects_per_udp_allocation(gateway: Gateway) -> None:
    driver = udp_driver(gateway)
    try:
        # A first few: the server's and the driver's one-time objects (caches, the thread).
        assert (await asyncio.to_thread(driver.drive, 10, 60.0)).completed == 10
        first = len(driver.sockets)
        gc.collect()
        before = len(gc.get_objects())
        result = await asyncio.to_thread(driver.drive, ALLOCATIONS, 60.0)
        assert result.completed == ALLOCATIONS
        assert gateway.stats("UDP").allocations == first + ALLOCATIONS
        gc.collect()
        # The driver's own client sockets are in this process too: one per allocation.
        added = len(gc.get_objects()) - before - (len(driver.sockets) - first)
        assert added <= TRACKED_PER_UDP_ALLOCATION * ALLOCATIONS + 20
        assert added >= (TRACKED_PER_UDP_ALLOCATION - 1) * ALLOCATIONS  # the census works
    finally:
        driver.close()


async def test_churn_under_the_gc_policy_leaves_nothing_frozen(gateway: Gateway) -> None:
    """Allocations made and deleted while stunnerd's policy freezes what lives: what stays in
    the frozen generation, and tracked, is flat (a leak would be some 14 objects per
    allocation: thousands here)."""
    server = gateway.stunner.listeners[gateway.listener_name("UDP")].server
    driver = udp_driver(gateway)
    policy = GcPolicy(full_interval=0.0)
    policy.full()  # as stunnerd's start, without the timer: the test ticks

    async def churn() -> int:
        assert (await asyncio.to_thread(driver.drive, ALLOCATIONS, 60.0)).completed == ALLOCATIONS
        policy.tick()  # the live allocations are frozen now
        for alloc in list(server.allocations.values()):
            server.delete_allocation(alloc, DeleteReason.REFRESH0, log=False)
        for sock in driver.sockets:
            sock.close()
        driver.sockets.clear()
        policy.tick()
        return gc.get_freeze_count() + len(gc.get_objects())

    try:
        first = await churn()  # one-time objects (caches, the driver's thread)
        counts = [await churn() for _ in range(3)]
        assert max(counts) - first <= 20
    finally:
        policy.close()
        driver.close()


@pytest.mark.parametrize("protocol", ["TCP", "TLS"])
async def test_a_connection_without_an_allocation_is_freed_without_the_collector(
    gateway: Gateway, protocol: str, collector_off: None
) -> None:
    """Connections that never allocate: closed at once (for TLS: before, and after, the
    handshake). The census goes back to what it was, or the wait fails."""
    before = left_behind()
    port = gateway.ports[protocol]
    for handshake in (False, True):
        if protocol == "TLS" and handshake:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=gateway.ssl_context())
        else:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        await wait_for(lambda: left_behind() != before)  # the server has the connection
        writer.close()
        await writer.wait_closed()
        await wait_for(lambda: left_behind() == before, 5.0)
