"""The peer-to-client fast path puts on the wire exactly what the codec would build."""

from __future__ import annotations

from typing import Any

import pytest

from stunner.stats import ListenerStats
from stunner.stun import Class, Method, pack_channel_data, parse_message
from stunner.turn.allocation import Allocation
from stunner.turn.relay import RelayProtocol

CLIENT = ("192.0.2.1", 5000)
PEER = ("10.0.0.2", 6000)


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def write(self, data: bytes) -> None:
        self.sent.append((data, None))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 100, 1203])
def test_channel_and_data_indication_frames(stream: bool, size: int) -> None:
    wire = Wire()
    stats = ListenerStats()
    alloc = Allocation(CLIENT, CLIENT, wire, stream, "u", stats)
    alloc.permissions[PEER[0]] = 1e18
    relay = RelayProtocol(alloc)
    payload = bytes(range(256)) * 5
    payload = payload[:size]

    relay.datagram_received(payload, PEER)  # permission, no channel: a Data indication
    indication = parse_message(wire.sent[-1][0])
    assert (indication.method, indication.msg_class) == (Method.DATA, Class.INDICATION)
    assert indication.attributes["DATA"] == payload
    assert indication.attributes["XOR-PEER-ADDRESS"] == [PEER]

    alloc.bind_channel(0x4001, PEER, 1e18)
    relay.datagram_received(payload, PEER)
    assert wire.sent[-1] == (pack_channel_data(0x4001, payload, stream), None if stream else CLIENT)

    relay.datagram_received(payload, ("10.0.0.3", 1))  # no permission: dropped, not counted
    assert len(wire.sent) == 2
    assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (2, 2 * size)
    assert stats.tx_packets == 2
    assert stats.tx_bytes == sum(len(frame) for frame, _ in wire.sent)
