"""Peer to a TCP/TLS client: ``StreamEgress`` (frames made in their batch slots, a wake-up's
frames in one write, one datagram without lists) writes exactly what ``Reference`` (the rules
in plain code, below) writes, write for write, and counts the same, refusals at the client's
bound included.

Real UDP sockets on loopback: every datagram goes to two relay sockets, one read by each path,
and both drain after each wake-up's datagrams. Peers: two with a channel, one with only a
permission (Data indications), one on 127.0.0.2 without a permission.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stunner.batchio import NATIVE, OFFSETS, DatagramBatch
from stunner.stats import Drop, ListenerStats
from stunner.stun import Address
from stunner.tls import TlsTransport
from stunner.turn import Allocation, DatagramClient, StreamClient
from stunner.turn.datapath import RelayReceiver, StreamEgress, data_indication, relay_drain
from tests.unit.test_relay_batching import udp_socket
from tests.unit.test_tls_ingress import Session

CHANNELS = {"a": 0x4000, "b": 0x4001}
PEERS = ("a", "b", "c", "stranger")  # c: permission, no channel; stranger: no permission


class Wire:
    """A TCP transport that keeps every write; its client reads nothing (``keeps``: all of it
    stays in the write buffer) or everything at once."""

    def __init__(self, keeps: bool = True) -> None:
        self.writes: list[bytes] = []
        self.keeps = keeps
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.writes)) if self.keeps else 0

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 5000) if name == "peername" else default

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


@pytest.fixture(autouse=True)
def fixed_transaction_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data indications carry a random transaction id: the same one for both paths here."""
    monkeypatch.setattr("stunner.stun.message.new_transaction_id", lambda: b"\x01" * 12)


@pytest.fixture
def peers() -> Iterator[dict[str, socket.socket]]:
    socks = {name: udp_socket("127.0.0.2" if name == "stranger" else "127.0.0.1") for name in PEERS}
    yield socks
    for sock in socks.values():
        sock.close()


class Path2:
    """One allocation's relay socket, drained by ``drain`` into a client over ``transport``."""

    def __init__(
        self,
        peers: dict[str, socket.socket],
        transport: object,
        limit: int,
        make: Callable[..., Callable[[], None]],
        native: bool,
    ) -> None:
        self.relay = udp_socket()
        self.stats = ListenerStats()
        self.client = StreamClient(transport, ("192.0.2.1", 5000), limit)  # type: ignore[arg-type]
        alloc = Allocation(self.client, "u")
        alloc.permit("127.0.0.1", 1e18)
        for name, channel in CHANNELS.items():
            alloc.bind_channel(channel, peers[name].getsockname(), 1e18)
        self.drain = make(alloc, self.relay, self.stats, DatagramBatch(native=native))

    def counts(self) -> dict[str, object]:
        return {name: getattr(self.stats, name) for name in ListenerStats.__slots__}


class Reference:
    """What reaches a relay socket, to a TCP/TLS client, by the rules in plain code: a bound
    channel's datagram (bound, and its peer's IP permitted) becomes a ChannelData frame padded
    to 4 bytes (RFC 8656 12.2, 12.5); a permitted peer's other datagram a Data indication
    (11.4), after the frames before it; anything else is dropped (11.3). A wake-up's frames
    before an indication, and those at its end, are written as one piece if the client's
    write buffer stays within its bound, else refused whole (counted as the client's refusal,
    frame by frame). Built with ``bytes`` and ``struct``, nothing shared with StreamEgress."""

    def __init__(
        self, alloc: Allocation, sock: socket.socket, stats: ListenerStats, batch: DatagramBatch
    ) -> None:
        self.alloc, self.sock, self.stats, self.batch = alloc, sock, stats, batch
        assert isinstance(alloc.client, StreamClient)
        self.client = alloc.client

    def channel_of(self, peer: Address) -> int | None:
        for channel, bound in self.alloc.channels.items():
            if bound == peer and self.alloc.permits(peer[0]):
                return channel
        return None

    def drain(self) -> None:
        sizes, addresses = self.batch.receive(self.sock)
        stats = self.stats
        run: list[bytes] = []
        for offset, size, peer in zip(OFFSETS[: len(sizes)], sizes, addresses, strict=True):
            payload = bytes(self.batch.view[offset : offset + size])
            channel = self.channel_of(peer)
            if channel is None and not self.alloc.permits(peer[0]):
                stats.dropped_packets[Drop.NO_PERMISSION] += 1
                stats.dropped_bytes[Drop.NO_PERMISSION] += size
                continue
            stats.cluster_rx_packets += 1
            stats.cluster_rx_bytes += size
            if channel is not None:
                run.append(struct.pack("!HH", channel, size) + payload + bytes(-size % 4))
                continue
            self.write(run)
            run = []
            self.write([data_indication(peer, payload)])
        self.write(run)

    def write(self, frames: list[bytes]) -> None:
        if not frames:
            return
        stats, data = self.stats, b"".join(frames)
        if self.client.fits(len(data), self.client.limit):
            self.client.transport.write(data)
            stats.tx_packets += len(frames)
            stats.tx_bytes += len(data)
        else:
            stats.dropped_packets[self.client.refusal] += len(frames)
            stats.dropped_bytes[self.client.refusal] += len(data)


def reference(alloc: Allocation, sock: socket.socket, stats: ListenerStats, batch: DatagramBatch):  # type: ignore[no-untyped-def]
    return Reference(alloc, sock, stats, batch).drain


def egress(alloc: Allocation, sock: socket.socket, stats: ListenerStats, batch: DatagramBatch):  # type: ignore[no-untyped-def]
    return StreamEgress(alloc, sock, stats, batch).drain


def wakeups(rng: random.Random, count: int) -> list[list[tuple[str, bytes]]]:
    """Wake-ups of 1 to 20 datagrams (one most often, as smooth traffic), all sizes mod 4."""
    out = []
    for _ in range(count):
        datagrams = []
        for _ in range(rng.choice((1, 1, 1, 2, 3, 20))):
            name = rng.choices(PEERS, weights=(6, 3, 1, 1))[0]
            size = rng.choice((0, 1, 2, 3, 100, 101, 102, 103, 1200, rng.randrange(0, 1500)))
            datagrams.append((name, rng.randbytes(size)))
        out.append(datagrams)
    return out


def run_both(
    peers: dict[str, socket.socket],
    transports: tuple[object, object],
    limit: int,
    native: bool,
    plan: list[list[tuple[str, bytes]]],
    between: Callable[[int], None] = lambda i: None,
) -> tuple[Path2, Path2]:
    slow = Path2(peers, transports[0], limit, reference, native)
    fast = Path2(peers, transports[1], limit, egress, native)
    for i, datagrams in enumerate(plan):
        between(i)
        for name, payload in datagrams:
            for path in (slow, fast):
                peers[name].sendto(payload, path.relay.getsockname())
        slow.drain()
        fast.drain()
    for path in (slow, fast):
        path.relay.close()
    return slow, fast


NATIVE_OR_NOT = [pytest.param(False, id="portable")]
if NATIVE:
    NATIVE_OR_NOT.append(pytest.param(True, id="recvmmsg"))


@pytest.mark.parametrize("native", NATIVE_OR_NOT)
@pytest.mark.parametrize("keeps", [False, True], ids=["client-reads", "client-stalls"])
async def test_same_writes_and_counts_as_the_reference(
    peers: dict[str, socket.socket], native: bool, keeps: bool
) -> None:
    plan = wakeups(random.Random(17), 300)
    # A stalled client's bound fills part-way: later runs and indications are refused whole.
    limit = 40_000 if keeps else 1 << 20
    wires = (Wire(keeps), Wire(keeps))
    slow, fast = run_both(peers, wires, limit, native, plan)
    assert fast.counts() == slow.counts()
    assert wires[1].writes == wires[0].writes
    stats, refused = fast.stats, fast.stats.dropped_packets[fast.client.refusal]
    assert stats.tx_packets > 100
    assert stats.dropped_packets[Drop.NO_PERMISSION] > 0  # the stranger's
    if keeps:
        assert refused > 0
        assert sum(map(len, wires[1].writes)) <= limit
    else:
        assert refused == 0
    assert stats.tx_bytes == sum(map(len, wires[1].writes))


async def test_a_closing_connection_takes_nothing(peers: dict[str, socket.socket]) -> None:
    wires = (Wire(False), Wire(False))

    def close_at_half(i: int) -> None:
        if i == 20:
            wires[0].closing = wires[1].closing = True

    slow, fast = run_both(
        peers, wires, 1 << 20, NATIVE, wakeups(random.Random(5), 40), close_at_half
    )
    assert fast.counts() == slow.counts()
    assert wires[1].writes == wires[0].writes
    assert fast.stats.dropped_packets[fast.client.refusal] > 0


@pytest.mark.parametrize("keeps", [False, True], ids=["client-reads", "client-stalls"])
async def test_tls_same_plaintext_records_and_counts(
    peers: dict[str, socket.socket], tmp_path: Path, keeps: bool
) -> None:
    (tmp_path / "slow").mkdir()
    (tmp_path / "fast").mkdir()
    sessions = (Session(tmp_path / "slow"), Session(tmp_path / "fast"))
    for session in sessions:  # the wire starts with the session tickets: the client reads them
        session.wire.get_write_buffer_size = (  # type: ignore[method-assign]
            (lambda w=session.wire: sum(map(len, w.out))) if keeps else (lambda: 0)
        )
    transports = tuple(TlsTransport(session.server) for session in sessions)
    plan = wakeups(random.Random(23), 200)
    slow, fast = run_both(peers, transports, 30_000, NATIVE, plan)  # type: ignore[arg-type]
    assert fast.counts() == slow.counts()
    # One TLS record per write, in the same places: the same number of TCP writes, and the
    # client decrypts the same plaintext.
    assert len(sessions[1].wire.out) == len(sessions[0].wire.out)
    plaintexts = []
    for session in sessions:
        session.to_client.write(b"".join(session.wire.out))
        received = b""
        while session.to_client.pending:
            received += session.client.read(1 << 20)
        plaintexts.append(received)
    assert plaintexts[1] == plaintexts[0]
    assert fast.stats.tx_bytes == len(plaintexts[1]) > 0
    if keeps:
        assert fast.stats.dropped_packets[fast.client.refusal] > 0


def test_relay_drain_picks_the_stream_path_for_stream_clients() -> None:
    relay = udp_socket()
    try:
        stream = Allocation(StreamClient(Wire(), ("192.0.2.1", 5000)), "u")  # type: ignore[arg-type]
        drain = relay_drain(stream, relay, ListenerStats())
        assert isinstance(drain.__self__, StreamEgress)  # type: ignore[attr-defined]
        datagram = Allocation(DatagramClient(relay, ("192.0.2.1", 5000)), "u")
        assert isinstance(relay_drain(datagram, relay, ListenerStats()).__self__, RelayReceiver)  # type: ignore[attr-defined]
    finally:
        relay.close()
