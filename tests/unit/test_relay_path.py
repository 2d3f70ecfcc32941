"""The relay fast paths put on the wire exactly what the codec would build, and count it.

Real sockets on 127.0.0.1: the listener and relay receivers read with ``recvfrom_into`` into
the shared buffer and send views of it, so the bytes are checked where they land.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from stunner.auth import PlaintextAuth
from stunner.batchio import BATCH, NATIVE, DatagramBatch
from stunner.config import LimitsConfig
from stunner.stats import ListenerStats
from stunner.stun import Class, Message, Method, pack_channel_data, parse_message
from stunner.turn import Allocation, Client, DatagramClient, StreamClient, TurnServer
from stunner.turn.datapath import DatagramIngress, RelayReceiver, StreamEgress


class Wire:
    """A TCP client's transport whose client never reads: keeps what is written, all of it
    still buffered (``get_write_buffer_size``)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def get_write_buffer_size(self) -> int:
        return sum(len(data) for data in self.sent)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


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
    client_addr = client.getsockname()
    endpoint: Client = (
        StreamClient(wire, client_addr)  # type: ignore[arg-type]
        if stream
        else DatagramClient(sockets["listener"], client_addr)
    )
    alloc = Allocation(endpoint, "u")
    peer_addr = peer.getsockname()
    alloc.permit(peer_addr[0], 1e18)
    receiver = (StreamEgress if stream else RelayReceiver)(alloc, relay, stats, batch)
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

    alloc.revoke(peer_addr[0])
    assert deliver(peer) is None  # no permission: dropped, not counted
    assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (2, 2 * size)
    assert stats.tx_packets == 2
    assert stats.tx_bytes == first + len(pack_channel_data(0x4001, payload, stream))


def udp_client_with_channel(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> tuple[ListenerStats, RelayReceiver]:
    """A UDP client's allocation with a permission and channel 0x4000 to the peer socket."""
    stats = ListenerStats()
    client_addr = sockets["client"].getsockname()
    alloc = Allocation(DatagramClient(sockets["listener"], client_addr), "u")
    peer_addr = sockets["peer"].getsockname()
    alloc.permit(peer_addr[0], 1e18)
    alloc.bind_channel(0x4000, peer_addr, 1e18)
    return stats, RelayReceiver(alloc, sockets["relay"], stats, batch)


def test_drain_stops_at_batch_and_counts_everything(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> None:
    client, peer, relay = sockets["client"], sockets["peer"], sockets["relay"]
    stats, receiver = udp_client_with_channel(sockets, batch)
    count = BATCH + 5
    for i in range(count):
        peer.sendto(i.to_bytes(2, "big"), relay.getsockname())
    receiver.drain()
    assert stats.cluster_rx_packets == BATCH  # one wake-up reads at most BATCH datagrams
    receiver.drain()
    assert (stats.cluster_rx_packets, stats.tx_packets) == (count, count)
    frames = [received(client) for _ in range(count)]
    assert frames == [pack_channel_data(0x4000, i.to_bytes(2, "big"), False) for i in range(count)]


def test_a_frame_the_kernel_refuses_does_not_take_the_rest_with_it(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> None:
    """A 65,507-byte peer datagram cannot become a ChannelData datagram (65,511 > 65,507):
    that frame is dropped and not counted; the frames around it still reach the client."""
    client, peer, relay = sockets["client"], sockets["peer"], sockets["relay"]
    stats, receiver = udp_client_with_channel(sockets, batch)
    payloads = [b"first", b"x" * 65507, b"last"]
    for payload in payloads:
        peer.sendto(payload, relay.getsockname())
    receiver.drain()
    assert [received(client), received(client)] == [
        pack_channel_data(0x4000, b"first", False),
        pack_channel_data(0x4000, b"last", False),
    ]
    assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (3, 65507 + 9)
    assert (stats.tx_packets, stats.tx_bytes) == (2, 4 + 5 + 4 + 4)


def test_client_to_peer_sends_the_payload_and_answers_stun(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> None:
    client, peer, listener = sockets["client"], sockets["peer"], sockets["listener"]
    listener.setblocking(False)
    peer_addr = peer.getsockname()
    server = TurnServer(
        "t", ListenerStats(), PlaintextAuth("r", "u", "p"), lambda ip: True, "127.0.0.1", 0, 0,
        limits=LimitsConfig(udp_amplification_guard=False),
    )  # fmt: skip
    client_addr = client.getsockname()
    alloc = Allocation(DatagramClient(listener, client_addr), "u")
    relay = sockets["relay"]
    alloc.relay = SimpleNamespace(sock=relay, sendto=relay.sendto)  # type: ignore[assignment]
    alloc.permit(peer_addr[0], 1e18)
    alloc.bind_channel(0x4000, peer_addr, 1e18)
    server.allocations[client_addr] = alloc
    receiver = DatagramIngress(server, listener, batch)
    binding = Message(Method.BINDING, Class.REQUEST).encode()
    sent = [pack_channel_data(0x4000, b"a" * n, False) for n in (0, 1, 100, 1203)]
    for datagram in [sent[0], binding, *sent[1:], b"\x40\x01\x00\x01z", b"\x40\x00\xff\xffshort"]:
        client.sendto(datagram, listener.getsockname())
    receiver.drain()
    assert [received(peer) for _ in range(4)] == [b"a" * n for n in (0, 1, 100, 1203)]
    answer = parse_message(received(client))
    assert (answer.method, answer.msg_class) == (Method.BINDING, Class.SUCCESS)
    stats = server.stats
    assert stats.rx_packets == 7  # unknown channel and short frame counted, not relayed
    assert stats.cluster_tx_packets == 4 and stats.cluster_tx_bytes == 1304
    assert stats.tx_packets == 1


def test_client_to_peer_keeps_order_across_runs_peers_and_send_indications(
    sockets: dict[str, socket.socket], batch: DatagramBatch
) -> None:
    """Runs of ChannelData to one peer leave in one sendmmsg; a change of peer or a Send
    indication in between must not reorder anything a peer receives."""
    client, peer, listener = sockets["client"], sockets["peer"], sockets["listener"]
    other = udp_socket()
    try:
        listener.setblocking(False)
        server = TurnServer(
            "t", ListenerStats(), PlaintextAuth("r", "u", "p"), lambda ip: True, "127.0.0.1", 0, 0
        )
        client_addr = client.getsockname()
        alloc = Allocation(DatagramClient(listener, client_addr), "u")
        relay = sockets["relay"]
        alloc.relay = SimpleNamespace(sock=relay, sendto=relay.sendto)  # type: ignore[assignment]
        alloc.permit("127.0.0.1", 1e18)
        alloc.bind_channel(0x4000, peer.getsockname(), 1e18)
        alloc.bind_channel(0x4001, other.getsockname(), 1e18)
        server.allocations[client_addr] = alloc
        send = Message(Method.SEND, Class.INDICATION)
        send.attributes["XOR-PEER-ADDRESS"] = [peer.getsockname()]
        send.attributes["DATA"] = b"s"
        script = [
            pack_channel_data(0x4000, b"a1"),
            pack_channel_data(0x4000, b"a2"),
            pack_channel_data(0x4001, b"b1"),
            pack_channel_data(0x4000, b"a3"),
            send.encode(),
            pack_channel_data(0x4000, b"a4"),
            pack_channel_data(0x4001, b"b2"),
        ]
        for datagram in script:
            client.sendto(datagram, listener.getsockname())
        DatagramIngress(server, listener, batch).drain()
        assert [received(peer) for _ in range(5)] == [b"a1", b"a2", b"a3", b"s", b"a4"]
        assert [received(other) for _ in range(2)] == [b"b1", b"b2"]
        assert (server.stats.cluster_tx_packets, server.stats.cluster_tx_bytes) == (7, 13)
    finally:
        other.close()


def test_address_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that churn through source ports must not grow the caches without bound."""
    import stunner.batchio as batchio

    monkeypatch.setattr(batchio, "_ADDRESS_CACHE_MAX", 8)
    batch = DatagramBatch()
    receiver = udp_socket()
    receiver.setblocking(False)
    try:
        for _ in range(3):
            senders = [udp_socket() for _ in range(10)]
            for sender in senders:
                sender.sendto(b"x", receiver.getsockname())
            sizes, addresses = batch.receive(receiver)
            assert sizes == [1] * 10
            assert addresses == [s.getsockname() for s in senders]
            for addr in addresses:
                batch.send(receiver, addr, [0, 0], [1, 1])  # sockaddr cache
            for sender in senders:
                sender.close()
            assert len(batch._addresses) <= 8 and len(batch._sockaddrs) <= 8
    finally:
        receiver.close()
