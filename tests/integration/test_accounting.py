"""The accounting closes: everything that enters a listener or a relay socket is relayed,
answered or dropped with exactly one reason (docs/metrics.md, "Accounting").

A mixed workload per transport: a real TURN client (aioice) relaying to an echo peer, a peer
outside every cluster flooding the client's relay address, and raw client input that is
garbage, too large, ChannelData without an allocation, a Send indication without one, and a
Binding request. Then, from the exported counters alone:

    listener rx      = cluster tx + responses + client-side drops
    peers' datagrams = cluster rx + peer-side drops (no_permission)
    cluster rx       = listener tx - responses            (relayed back, none refused)

The UDP amplification guard is on (the default): this workload stays inside a source's
byte budget, so it withholds nothing and ``amplification`` stays 0, exactly.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from stunner.stats import DROP_REASONS, Drop, ListenerSample
from stunner.stun import Class, Message, Method
from testkit.wait import wait_for
from tests.integration.conftest import Gateway
from tests.support import TurnClient

K_DATAGRAMS = 20
FLOOD = 7  # datagrams from a peer without a permission
GARBAGE = b"\xff" * 10  # first bits 11: neither STUN nor ChannelData
STRAY_CHANNEL_DATA = b"\x40\x00\x00\x04abcd"  # channel 0x4000, from a client with no allocation


def _send_indication(peer: tuple[str, int]) -> bytes:
    message = Message(Method.SEND, Class.INDICATION)
    message.attributes["XOR-PEER-ADDRESS"] = [peer]
    message.attributes["DATA"] = b"hello"
    return message.encode()


def _binding_request() -> bytes:
    return Message(Method.BINDING, Class.REQUEST).encode()


def _oversize_stun() -> bytes:
    """A STUN header announcing 9,000 bytes of attributes: over max_message_size (8,192)."""
    return b"\x00\x01" + (9000).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + b"\x00" * 12


async def _raw_udp(server: tuple[str, int], peer: tuple[str, int]) -> dict[Drop, int]:
    """Client input that is not relayed; returns the bytes each drop reason should see."""
    oversize = _oversize_stun() + b"\x00" * 9000
    send = _send_indication(peer)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for datagram in (GARBAGE, STRAY_CHANNEL_DATA, send, oversize, _binding_request()):
            sock.sendto(datagram, server)
    finally:
        sock.close()
    return {
        Drop.MALFORMED: len(GARBAGE),
        Drop.NO_CHANNEL: len(STRAY_CHANNEL_DATA),
        Drop.NO_PERMISSION: len(send),
        Drop.OVERSIZE: len(oversize),
    }


async def _raw_tcp(server: tuple[str, int], peer: tuple[str, int]) -> dict[Drop, int]:
    """The same on streams: frames on one connection that ends with garbage (which closes it),
    and an oversized frame header on another."""
    send = _send_indication(peer)
    reader, writer = await asyncio.open_connection(*server)
    writer.write(_binding_request() + send + STRAY_CHANNEL_DATA + GARBAGE)
    await reader.read()  # the server closes the connection at the garbage
    writer.close()
    reader, writer = await asyncio.open_connection(*server)
    writer.write(_oversize_stun())
    await reader.read()
    writer.close()
    return {
        Drop.MALFORMED: len(GARBAGE),
        Drop.NO_CHANNEL: len(STRAY_CHANNEL_DATA),
        Drop.NO_PERMISSION: len(send),
        Drop.OVERSIZE: len(_oversize_stun()),
    }


@pytest.mark.parametrize("protocol", ["UDP", "TCP"])
async def test_rx_is_relayed_plus_answered_plus_dropped(gateway: Gateway, protocol: str) -> None:
    server = ("127.0.0.1", gateway.ports[protocol])
    st = gateway.stats(protocol)

    client = await TurnClient.connect(server, protocol)
    await client.send_and_wait(gateway.echo.address, K_DATAGRAMS, 100)
    relayed = client.transport.get_extra_info("sockname")
    for _ in range(FLOOD):
        gateway.outsider.send(b"x" * 50, relayed)
    await wait_for(lambda: st.dropped_packets[Drop.NO_PERMISSION] == FLOOD)
    raw = _raw_udp if protocol == "UDP" else _raw_tcp
    expected_bytes = await raw(server, gateway.echo.address)
    await wait_for(lambda: sum(st.dropped_packets) == FLOOD + 4)
    await wait_for(lambda: st.responses[_binding_ok()] == 1)
    client.transport.close()
    await wait_for(lambda: st.allocations == 0 and st.connections == 0)
    await asyncio.sleep(0.2)  # nothing else in flight: the counters are final

    s: ListenerSample = st.sample()
    dropped = dict(zip(DROP_REASONS, s.dropped_packets, strict=True))
    assert dropped == {
        "no_permission": FLOOD + 1,  # the flood (peer side), the Send indication (client side)
        "no_channel": 1,
        "malformed": 1,
        "amplification": 0,
        "write_buffer_full": 0,
        "send_error": 0,
        "oversize": 1,
        "own_listener": 0,
    }
    flood_bytes = FLOOD * 50
    assert s.dropped_bytes[Drop.NO_PERMISSION] == expected_bytes[Drop.NO_PERMISSION] + flood_bytes
    for reason in (Drop.NO_CHANNEL, Drop.MALFORMED, Drop.OVERSIZE):
        assert s.dropped_bytes[reason] == expected_bytes[reason], reason.label

    answered = sum(s.responses)
    client_side_drops = sum(s.dropped_packets) - FLOOD
    # Client to server: each frame relayed to a peer, answered, or dropped.
    assert s.rx_packets == s.cluster_tx_packets + answered + client_side_drops
    # Peers to relay: each datagram taken (cluster rx) or dropped for want of a permission.
    peers_sent = gateway.echo.counts().sent_packets + gateway.outsider.counts().sent_packets
    assert peers_sent == s.cluster_rx_packets + FLOOD
    # What the relay took from peers went on to the client: listener tx is that plus answers.
    assert s.tx_packets == s.cluster_rx_packets + answered
    assert s.cluster_tx_packets == s.cluster_rx_packets == K_DATAGRAMS
    # The lifecycle: one allocation, ended by the client's Refresh 0 (UDP) or by closing its
    # connection (TCP: aioice closes the socket without a Refresh).
    deleted = sum(s.deleted)
    assert deleted == 1 and sum(s.duration_buckets) == 1


def _binding_ok() -> int:
    from stunner.stats import response_slot

    return response_slot(Method.BINDING, 0)


async def test_peer_datagram_too_large_for_a_udp_client_is_oversize(gateway: Gateway) -> None:
    """65,504 bytes plus the 4-byte ChannelData header exceed the largest UDP payload: the peer
    datagram is taken (cluster rx) and dropped as oversize, never half-sent."""
    server = ("127.0.0.1", gateway.ports["UDP"])
    st = gateway.stats("UDP")
    client = await TurnClient.connect(server, "UDP")
    try:
        await client.send_and_wait(gateway.echo.address, 1, 10)  # binds the channel
        before = st.sample()
        gateway.echo.send(b"x" * 65504, client.transport.get_extra_info("sockname"))
        await wait_for(lambda: st.dropped_packets[Drop.OVERSIZE] == 1)
        after = st.sample()
        assert after.dropped_bytes[Drop.OVERSIZE] == 65504
        assert after.cluster_rx_packets == before.cluster_rx_packets + 1
        assert after.tx_packets == before.tx_packets
        assert sum(after.dropped_packets) == 1
    finally:
        client.transport.close()
