"""A listener restart (a new port, a rotated certificate) closes its accepted connections.

The client must hear the end (a FIN; on TLS a close_notify first), not silence: it then
reconnects to the new listener and relays again. Its old allocation ends as
``listener_removed``, the gauges follow, and the counters carry on from where they were.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl

import pytest

from stunner.stun import Class
from stunner.turn import Allocation, AllocationObserver, DeleteReason
from testkit.ports import free_port
from testkit.wait import settle
from tests.integration.conftest import Gateway
from tests.streamturn import StreamTurn
from tests.support import client_ssl_context, self_signed_cert

PAYLOAD = b"x" * 100


class Reasons:
    """Passes the core's events on and keeps each deletion's reason."""

    def __init__(self, then: AllocationObserver) -> None:
        self.then = then
        self.deleted_as: list[DeleteReason] = []

    def created(self, alloc: Allocation) -> None:
        self.then.created(alloc)

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None:
        self.deleted_as.append(reason)
        self.then.deleted(alloc, reason)


def relay_once(client: StreamTurn, gateway: Gateway) -> None:
    """Allocate, bind a channel to the echo peer, and get one datagram back."""
    client.allocate()
    assert client.channel_bind(0x4000, gateway.echo.address).msg_class == Class.SUCCESS
    client.send_channel_data(0x4000, PAYLOAD)
    assert client.read_frame() == b"\x40\x00\x00\x64" + PAYLOAD


@pytest.mark.parametrize("protocol", ["TCP", "TLS"])
async def test_restart_closes_connections_and_clients_reconnect(
    gateway: Gateway, protocol: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = gateway.listener_name(protocol)
    tls: ssl.SSLContext | None = gateway.ssl_context() if protocol == "TLS" else None
    old = await asyncio.to_thread(StreamTurn.connect, ("127.0.0.1", gateway.ports[protocol]), tls)
    await asyncio.to_thread(relay_once, old, gateway)
    st = gateway.stats(protocol)
    assert (st.allocations, st.connections, st.cluster_connections) == (1, 1, 1)
    running = gateway.stunner.listeners[name]
    reasons = Reasons(running.server.observer)
    running.server.observer = reasons

    config = copy.deepcopy(gateway.config)
    entry = next(lis for lis in config["listeners"] if lis["name"] == name)
    if protocol == "TCP":
        entry["port"] = gateway.ports["TCP"] = free_port()
    else:  # certificate rotation, same port
        cert, key = self_signed_cert(tmp_path_factory.mktemp("rotated"))
        entry["cert"] = base64.b64encode(cert).decode()
        entry["key"] = base64.b64encode(key).decode()
        tls = client_ssl_context(cert)
    await gateway.apply(config)

    # The client hears the end: FIN (after a close_notify on TLS), not a reset, not silence.
    assert await asyncio.wait_for(asyncio.to_thread(old.sees_end), 5.0) == "eof"
    old.close()
    assert reasons.deleted_as == [DeleteReason.LISTENER_REMOVED]
    await settle(lambda: (st.allocations, st.connections, st.cluster_connections), (0, 0, 0))

    new = await asyncio.to_thread(StreamTurn.connect, ("127.0.0.1", gateway.ports[protocol]), tls)
    try:
        await asyncio.to_thread(relay_once, new, gateway)
        assert (st.allocations, st.connections, st.cluster_connections) == (1, 1, 1)
        # Counters carried on: two clients' worth, each 401 + Allocate + ChannelBind + one
        # datagram each way; nothing counted twice, nothing reset.
        assert (st.rx_packets, st.tx_packets) == (8, 8)
        assert (st.cluster_tx_packets, st.cluster_rx_packets) == (2, 2)
        assert (st.cluster_tx_bytes, st.cluster_rx_bytes) == (200, 200)
        assert (st.connections_total, st.cluster_connections_total) == (2, 2)
    finally:
        new.close()
    await settle(lambda: (st.allocations, st.connections, st.cluster_connections), (0, 0, 0))
