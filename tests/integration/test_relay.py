"""Real TURN clients (aioice) through UDP, TCP and TLS listeners; exact counters after."""

from __future__ import annotations

import asyncio

import pytest
from aioice.stun import TransactionFailed

from stunner.stats import ListenerSample
from testkit.wait import wait_for
from tests.integration.conftest import PROTOCOLS, Gateway, LiveStats
from tests.support import TurnClient, samples, scrape_async, value

N_CLIENTS = 2
K_DATAGRAMS = 25
SIZE = 100
STUN_SIGNALING = 4  # per client: Allocate (401), Allocate, ChannelBind, Refresh(0)


def stats(gw: Gateway, protocol: str) -> LiveStats:
    return gw.stats(protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_clients_relay_and_counters_are_exact(gateway: Gateway, protocol: str) -> None:
    server = ("127.0.0.1", gateway.ports[protocol])
    clients = [
        await TurnClient.connect(server, protocol, ssl_context=gateway.ssl_context())
        for _ in range(N_CLIENTS)
    ]
    st = stats(gateway, protocol)
    assert st.allocations == N_CLIENTS
    assert st.connections == N_CLIENTS and st.cluster_connections == N_CLIENTS
    for client in clients:
        await client.send_and_wait(gateway.echo.address, K_DATAGRAMS, SIZE)
        assert all(len(data) == SIZE for data in client.received)
    for client in clients:
        await client.close()
    await wait_for(lambda: st.allocations == 0 and st.connections == 0)

    scraped = samples(await scrape_async(gateway.metrics_url))
    name = gateway.listener_name(protocol)
    total = N_CLIENTS * K_DATAGRAMS
    assert gateway.echo.received == total
    # Cluster side: exact, payload bytes only.
    assert value(scraped, "stunner_cluster_packets_total", name, "tx") == total
    assert value(scraped, "stunner_cluster_bytes_total", name, "tx") == total * SIZE
    assert value(scraped, "stunner_cluster_packets_total", name, "rx") == total
    assert value(scraped, "stunner_cluster_bytes_total", name, "rx") == total * SIZE
    assert value(scraped, "stunner_cluster_connections_total", name) == N_CLIENTS
    assert value(scraped, "stunner_listener_connections_total", name) == N_CLIENTS
    for gauge in (
        "stunner_cluster_connections",
        "stunner_listener_connections",
        "stunner_allocations_active",
    ):
        assert value(scraped, gauge, name) == 0
    # Listener side: every frame, signaling included. Exact on loopback: no retransmission,
    # the amplification guard answers a new UDP source's first Allocate at once.
    per_direction = total + N_CLIENTS * STUN_SIGNALING
    rx_packets = value(scraped, "stunner_listener_packets_total", name, "rx")
    assert rx_packets == per_direction
    assert value(scraped, "stunner_listener_packets_total", name, "tx") == per_direction
    data_bytes = total * (4 + SIZE)  # ChannelData header; 100 B needs no padding
    rx_bytes = value(scraped, "stunner_listener_bytes_total", name, "rx")
    tx_bytes = value(scraped, "stunner_listener_bytes_total", name, "tx")
    assert data_bytes + N_CLIENTS * STUN_SIGNALING * 20 <= rx_bytes
    assert rx_bytes <= data_bytes + N_CLIENTS * STUN_SIGNALING * 200
    assert data_bytes + N_CLIENTS * STUN_SIGNALING * 20 <= tx_bytes
    assert tx_bytes <= data_bytes + N_CLIENTS * STUN_SIGNALING * 200
    # The other listeners saw nothing.
    for other in PROTOCOLS:
        if other != protocol:
            assert stats(gateway, other).sample() == ListenerSample(serving=1)


async def test_tcp_channel_data_is_padded(gateway: Gateway) -> None:
    """7-byte payloads travel as 12-byte padded frames on TCP (RFC 8656 12.5)."""
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["TCP"]), "TCP")
    await client.send_and_wait(gateway.echo.address, 10, 7)
    assert [len(d) for d in client.received] == [7] * 10
    st = stats(gateway, "TCP")
    assert st.cluster_tx_bytes == 70 and st.cluster_rx_bytes == 70
    await client.close()
    await wait_for(lambda: st.allocations == 0)
    # Listener tx = 4 signaling responses + 10 padded ChannelData frames of 12 bytes.
    signaling_tx = st.tx_bytes - 10 * 12
    assert st.tx_packets == 10 + STUN_SIGNALING
    assert 4 * 20 <= signaling_tx <= 4 * 200


async def test_peer_outside_the_cluster_is_refused(gateway: Gateway) -> None:
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    st = stats(gateway, "UDP")
    rx_before = st.rx_packets
    with pytest.raises(TransactionFailed) as failure:
        await client.protocol.channel_bind(0x4000, gateway.outsider.address)
    assert failure.value.response.attributes["ERROR-CODE"][0] == 403
    # Also a Send indication with no permission: dropped, nothing reaches the outsider.
    client.transport.sendto(b"x" * 10, gateway.outsider.address)
    await asyncio.sleep(0.2)
    assert gateway.outsider.received == 0
    assert (st.cluster_tx_packets, st.cluster_tx_bytes, st.cluster_rx_packets) == (0, 0, 0)
    assert st.rx_packets > rx_before  # listener traffic still counted
    await client.close()


async def test_strict_dns_cluster_admits_resolved_names(gateway: Gateway) -> None:
    config = dict(gateway.config)
    config["clusters"] = [
        {"name": "stunner/media-plane", "type": "STRICT_DNS", "endpoints": ["localhost"]}
    ]
    await gateway.apply(config)
    assert gateway.stunner.clusters["stunner/media-plane"].contains("127.0.0.1")
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 5, 50)
    await client.close()
