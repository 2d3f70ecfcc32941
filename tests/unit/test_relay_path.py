"""The relay fast paths put on the wire exactly what the codec would build, and count it.

Real sockets on 127.0.0.1: the listener and relay receivers read with ``recvfrom_into`` into
the shared buffer and send views of it, so the bytes are checked where they land.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from stunner.stats import ListenerStats
from stunner.stun import Class, Method, pack_channel_data, parse_message
from stunner.turn.allocation import Allocation
from stunner.turn.relay import RelayReceiver
from stunner.batchio import BATCH, NATIVE, DatagramBatch


class Wire:
    """A TCP client's transport: keeps what is written."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    socks = {name: udp_socket() for name in ("client", "listener", "relay", "peer")}
    socks["relay"].setblocking(False)
    yield socks
    for sock in socks.values():
        sock.close()


def received(sock: socket.socket) -> bytes:
    data, _ = sock.recvfrom(70000)
    return data


@pytest.fixture(params=["native", "portable"])
def batch(request: pytest.FixtureRequest) -> DatagramBatch:
    """recvmmsg/sendmmsg, and the one-call-per-datagram path they must match byte for byte."""
    if request.param == "native" and not NATIVE:
        pytest.skip("no recvmmsg/sendmmsg in this libc")
    return DatagramBatch(native=request.param == "native")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 100, 1203, 65000])
def test_peer_to_client_frames(
    sockets: dict[str, socket.socket], batch: DatagramBatch, stream: bool, size: int
) -> None:
    client, peer, relay = sockets["client"], sockets["peer"], sockets["relay"]
    wire = Wire()
    stats = ListenerStats()
    client_transport: Any = wire if stream else sockets["listener"]
    client_addr = client.getsockname()
    alloc = Allocation(client_addr, client_addr, client_transport, stream, "u", stats)
    peer_addr = peer.getsockname()
    alloc.permissions[peer_addr[0]] = 1e18
    receiver = RelayReceiver(alloc, relay, batch)
    payload = (bytes(range(256)) * 256)[:size]

    def deliver(sender: socket.socket) -> bytes | None:
        written = len(wire.sent)
        sender.sendto(payload, relay.getsockname())
        receiver.drain()
        if stream:
            return wire.sent[-1] if len(wire.sent) > written else None
        client.settimeout(0.2)
        try:
            return received(client)
        except TimeoutError:
            return None

    indication = parse_message(deliver(peer) or b"")  # permission, no channel: Data indication
    assert (indication.method, indication.msg_class) == (Method.DATA, Class.INDICATION)
    assert indication.attributes["DATA"] == payload
    assert indication.attributes["XOR-PEER-ADDRESS"] == [peer_addr]
    first = len(indication.encode())

    alloc.bind_channel(0x4001, peer_addr, 1e18)
    assert deliver(peer) == pack_channel_data(0x4001, payload, stream)

    alloc.permissions.clear()
    assert deliver(peer) is None  # no permission: dropped, not counted
    assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (2, 2 * size)
    assert stats.tx_packets == 2
    assert stats.tx_bytes == first + len(pack_channel_data(0x4001, payload, stream))


def test_drain_stops_at_batch_and_counts_everything(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> None:
    client, peer, relay = sockets["client"], sockets["peer"], sockets["relay"]
    stats = ListenerStats()
    client_addr = client.getsockname()
    alloc = Allocation(client_addr, client_addr, sockets["listener"], False, "u", stats)
    peer_addr = peer.getsockname()
    alloc.permissions[peer_addr[0]] = 1e18
    alloc.bind_channel(0x4000, peer_addr, 1e18)
    receiver = RelayReceiver(alloc, relay, batch)
    count = BATCH + 5
    for i in range(count):
        peer.sendto(i.to_bytes(2, "big"), relay.getsockname())
    receiver.drain()
    assert stats.cluster_rx_packets == BATCH  # one wake-up reads at most BATCH datagrams
    receiver.drain()
    assert (stats.cluster_rx_packets, stats.tx_packets) == (count, count)
    frames = [received(client) for _ in range(count)]
    assert frames == [pack_channel_data(0x4000, i.to_bytes(2, "big"), False) for i in range(count)]
