"""A client that vanishes without Refresh(0) takes its allocation with it.

Real sockets on 127.0.0.1, real listeners. A TCP or TLS client allocates, then aborts its
connection (no Refresh, no FIN, no close_notify); a UDP client allocates and falls silent
until its allocation's lifetime runs out. Its allocation, relay port, quota share and every
gauge must go, exactly, and the core must report the deletion as ``connection_closed`` or
``expired``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest

from stunner.auth import long_term_key
from stunner.config import LimitsConfig
from stunner.listener import Listener
from stunner.stats import ListenerSample
from stunner.stun import Class, Message, Method, parse_message
from stunner.telemetry import listener_sample
from stunner.turn import Allocation, DeleteReason
from stunner.turn.limits import Quotas
from testkit.ports import free_port
from testkit.wait import wait_for
from tests.streamturn import listener as stream_listener
from tests.support import client_ssl_context, self_signed_cert

REALM = "stunner.l7mp.io"


class Events:
    """An AllocationObserver that records what the core reports."""

    def __init__(self) -> None:
        self.made = 0
        self.reasons: list[DeleteReason] = []

    def created(self, alloc: Allocation) -> None:
        self.made += 1

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None:
        self.reasons.append(reason)


async def read_stun(reader: asyncio.StreamReader) -> Message:
    header = await asyncio.wait_for(reader.readexactly(20), 5.0)
    body = await asyncio.wait_for(reader.readexactly(int.from_bytes(header[2:4], "big")), 5.0)
    return parse_message(header + body)


def port_is_free(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def sample(listener: Listener) -> ListenerSample:
    return listener_sample(
        listener.stats, listener.server.allocations.values(), len(listener.streams)
    )


@pytest.mark.parametrize("protocol", ["TCP", "TLS"])
async def test_stream_client_abort_frees_allocation_relay_socket_and_gauges(
    protocol: str, tmp_path: Path
) -> None:
    relay_port = free_port()
    cert, key = self_signed_cert(tmp_path) if protocol == "TLS" else (b"", b"")
    tls: ssl.SSLContext | None = client_ssl_context(cert) if cert else None
    events = Events()
    quotas = Quotas()
    listener = stream_listener(
        protocol, relay_port, cert=cert, key=key, quotas=quotas, events=events
    )
    config = listener.config
    await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", config.port, ssl=tls)
        request = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
        writer.write(request.encode())
        challenge = await read_stun(reader)
        signed = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
        signed.attributes.update(
            {"USERNAME": "user1", "REALM": REALM, "NONCE": challenge.attributes["NONCE"]}
        )
        writer.write(signed.encode(long_term_key("user1", REALM, "pass1")))
        allocated = await read_stun(reader)
        assert allocated.msg_class == Class.SUCCESS
        assert allocated.attributes["XOR-RELAYED-ADDRESS"] == ("127.0.0.1", relay_port)
        live = sample(listener)
        assert (live.allocations, live.cluster_connections, live.connections) == (1, 1, 1)
        assert (quotas.count, events.made, port_is_free(relay_port)) == (1, 1, False)

        writer.transport.abort()  # no Refresh(0), no FIN, no close_notify
        for _ in range(500):
            if not listener.streams:
                break
            await asyncio.sleep(0.01)
        assert len(listener.streams) == 0, "the listener never saw the connection go"

        assert listener.server.allocations == {}
        assert events.reasons == [DeleteReason.CONNECTION_CLOSED]
        assert quotas.count == 0 and quotas.per_user == {}
        gone = sample(listener)
        assert (gone.allocations, gone.cluster_connections, gone.connections) == (0, 0, 0)
        assert (gone.connections_total, gone.cluster_connections_total) == (1, 1)
        assert (gone.rx_packets, gone.tx_packets) == (2, 2)  # two Allocates, two answers
        await asyncio.sleep(0)  # the relay socket's close is immediate; the port is free
        assert port_is_free(relay_port)
    finally:
        await listener.stop()


async def test_silent_udp_client_is_freed_when_its_allocation_expires() -> None:
    """No Refresh, no traffic: the sweeper ends the allocation at its lifetime (the server's
    clock is moved past it), and everything it held goes with it."""
    relay_port = free_port()
    events = Events()
    quotas = Quotas()
    listener = stream_listener(
        "UDP",
        relay_port,
        limits=LimitsConfig(udp_amplification_guard=False),
        quotas=quotas,
        events=events,
    )
    config = listener.config
    now = [1000.0]
    listener.server.clock = lambda: now[0]
    await listener.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5.0)
    try:
        address = ("127.0.0.1", config.port)
        request = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
        await asyncio.to_thread(client.sendto, request.encode(), address)
        challenge = parse_message((await asyncio.to_thread(client.recvfrom, 2048))[0])
        signed = Message(
            Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17, "LIFETIME": 600}
        )
        signed.attributes.update(
            {"USERNAME": "user1", "REALM": REALM, "NONCE": challenge.attributes["NONCE"]}
        )
        await asyncio.to_thread(
            client.sendto, signed.encode(long_term_key("user1", REALM, "pass1")), address
        )
        allocated = parse_message((await asyncio.to_thread(client.recvfrom, 2048))[0])
        assert allocated.msg_class == Class.SUCCESS
        assert allocated.attributes["LIFETIME"] == 600
        live = sample(listener)
        assert (live.allocations, live.cluster_connections, live.connections) == (1, 1, 1)
        assert (quotas.count, port_is_free(relay_port)) == (1, False)

        listener.server.sweep(now[0] + 599.0)  # one second before: still there
        assert len(listener.server.allocations) == 1 and events.reasons == []
        now[0] += 600.0  # the client stayed silent for the whole lifetime
        await wait_for(lambda: not listener.server.allocations, what="the sweeper expires it")

        assert events.reasons == [DeleteReason.EXPIRED]
        assert quotas.count == 0 and quotas.per_user == {}
        gone = sample(listener)
        assert (gone.allocations, gone.cluster_connections, gone.connections) == (0, 0, 0)
        assert (gone.connections_total, gone.cluster_connections_total) == (1, 1)
        assert (gone.rx_packets, gone.tx_packets) == (2, 2)
        assert port_is_free(relay_port)
    finally:
        client.close()
        await listener.stop()
