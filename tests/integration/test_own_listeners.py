"""Nothing is relayed into stunnerd's own listener ports, whatever the cluster says.

The gateway's cluster names 127.0.0.1, where its own listeners are bound: the misconfiguration
that let a client allocate through the relay into itself (TURN over TURN). ChannelBind to a
listener's address gets 403, a Send indication to it is dropped as ``own_listener``, a reload
that moves a listener onto a bound peer unbinds that channel; relay-to-relay keeps working.
"""

from __future__ import annotations

import asyncio
import copy

from stunner.stats import Drop
from stunner.stun import Class, Message, Method
from stunner.turn.own import OwnListeners
from testkit.ports import free_port
from tests.integration.conftest import PROTOCOLS, Gateway
from tests.streamturn import StreamTurn


async def connect(gateway: Gateway) -> StreamTurn:
    client = await asyncio.to_thread(StreamTurn.connect, ("127.0.0.1", gateway.ports["TCP"]))
    await asyncio.to_thread(client.allocate)
    return client


async def test_own_listener_ports_are_refused_and_dropped(gateway: Gateway) -> None:
    client = await connect(gateway)
    st = gateway.stats("TCP")
    try:
        for protocol in PROTOCOLS:  # 127.0.0.1 is in the cluster, the listener ports are not
            own = ("127.0.0.1", gateway.ports[protocol])
            refused = await asyncio.to_thread(client.channel_bind, 0x4001, own)
            assert refused.attributes["ERROR-CODE"][0] == 403
        admitted = await asyncio.to_thread(client.channel_bind, 0x4000, gateway.echo.address)
        assert admitted.msg_class == Class.SUCCESS  # and 127.0.0.1 has a permission now

        # A Send indication to a listener, permission or not, is dropped and counted.
        own_udp = ("127.0.0.1", gateway.ports["UDP"])
        await asyncio.to_thread(client.send_indication, own_udp, b"nested allocate")
        await asyncio.to_thread(client.send_indication, gateway.echo.address, b"to the echo")
        echoed = await asyncio.to_thread(client.read_frame)  # on the echo's channel
        assert echoed == b"\x40\x00\x00\x0bto the echo\x00"
        counters = gateway.stunner.stats[gateway.listener_name("TCP")]  # drops: not exported yet
        assert counters.dropped_packets[Drop.OWN_LISTENER] == 1
        indication = Message(Method.SEND, Class.INDICATION)  # as streamturn sends it
        indication.attributes["XOR-PEER-ADDRESS"] = [own_udp]
        indication.attributes["DATA"] = b"nested allocate"
        assert counters.dropped_bytes[Drop.OWN_LISTENER] == len(indication.encode())
        assert (st.cluster_tx_packets, st.cluster_tx_bytes) == (1, len(b"to the echo"))
        assert gateway.stats("UDP").rx_packets == 0  # nothing reached the UDP listener
    finally:
        client.close()


async def test_a_listener_moved_onto_a_bound_peer_unbinds_its_channel(gateway: Gateway) -> None:
    client = await connect(gateway)
    try:
        target = ("127.0.0.1", free_port())  # a peer today, a listener after the reload
        bound = await asyncio.to_thread(client.channel_bind, 0x4002, target)
        assert bound.msg_class == Class.SUCCESS
        alloc = next(
            iter(
                gateway.stunner.listeners[gateway.listener_name("TCP")].server.allocations.values()
            )
        )
        assert alloc.routes == {0x4002: target}
        config = copy.deepcopy(gateway.config)
        config["listeners"][0]["port"] = gateway.ports["UDP"] = target[1]
        await gateway.apply(config)
        assert alloc.routes == {} and 0x4002 not in alloc.channels
        refused = await asyncio.to_thread(client.channel_bind, 0x4002, target)
        assert refused.attributes["ERROR-CODE"][0] == 403
    finally:
        client.close()


async def test_relay_to_relay_still_works(gateway: Gateway) -> None:
    """Two clients relayed by the same gateway reach each other through their relays."""
    a, b = await connect(gateway), await connect(gateway)
    try:
        assert (await asyncio.to_thread(a.channel_bind, 0x4000, b.relay)).msg_class == Class.SUCCESS
        assert (await asyncio.to_thread(b.channel_bind, 0x4000, a.relay)).msg_class == Class.SUCCESS
        await asyncio.to_thread(a.send_channel_data, 0x4000, b"hello b")
        assert await asyncio.to_thread(b.read_frame) == b"\x40\x00\x00\x07hello b\x00"
        await asyncio.to_thread(b.send_channel_data, 0x4000, b"hi a")
        assert await asyncio.to_thread(a.read_frame) == b"\x40\x00\x00\x04hi a"
    finally:
        a.close()
        b.close()


def test_a_wildcard_listener_matches_every_local_address_on_its_port() -> None:
    own = OwnListeners([("0.0.0.0", 3478), ("127.0.0.2", 443)])
    assert ("127.0.0.1", 3478) in own and ("127.0.0.9", 3478) in own
    assert ("127.0.0.1", 3479) not in own  # another port: a peer like any other
    assert ("192.0.2.1", 3478) not in own  # TEST-NET-1: not an address of this host
    assert ("127.0.0.2", 443) in own and ("127.0.0.3", 443) not in own
    assert not own.update([("0.0.0.0", 3478), ("127.0.0.2", 443)])  # unchanged
    assert own.update([("127.0.0.2", 443)])
    assert ("127.0.0.1", 3478) not in own
