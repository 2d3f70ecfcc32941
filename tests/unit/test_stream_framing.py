"""TCP/TLS ingress: the chunk-at-a-time fast path (``StreamIngress.frames``: frames cut in
place, runs sent with one sendmmsg from the batch memory) puts on the wire exactly what a
byte-wise reader relaying one frame at a time would, in the same order, and counts the same.

Real UDP sockets on 127.0.0.1: one relay socket, one peer socket per channel, so every
relayed payload is checked where it lands. STUN frames are recorded where the server would
handle them, together with what had reached the peers by then (nothing may overtake).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from stunner.auth import PlaintextAuth
from stunner.batchio import BATCH, NATIVE, DatagramBatch
from stunner.listener import StreamConnectionProtocol
from stunner.stats import Drop, ListenerStats
from stunner.stun import Class, Message, Method, pack_channel_data
from stunner.stun.channel import stream_frame_length
from stunner.turn import TurnServer

ROUTED = range(0x4000, 0x4004)  # bound, with a permission: relayed to peer k
UNPERMITTED = 0x4010  # bound, permission gone: no_permission
UNBOUND = 0x4020  # no_channel


class _Transport:
    closed = False

    def get_extra_info(self, name: str) -> object:
        return ("192.0.2.1", 5000) if name == "peername" else None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        pass


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setblocking(False)
    return sock


@pytest.fixture
def wire() -> Iterator[SimpleNamespace]:
    relay = _udp()
    peers = {channel: _udp() for channel in ROUTED}
    yield SimpleNamespace(relay=relay, peers=peers)
    for sock in [relay, *peers.values()]:
        sock.close()


class Run:
    """One connection fed ``chunks``: what reached each peer, between the STUN frames."""

    def __init__(self, wire: SimpleNamespace, chunks: list[bytes], native: bool) -> None:
        self.wire = wire
        self.server = TurnServer(
            "l", ListenerStats(), PlaintextAuth("r", "u", "p"), lambda ip: True,
            "127.0.0.1", 40000, 40001,
        )  # fmt: skip
        proto = StreamConnectionProtocol(self.server)
        self.transport = _Transport()
        proto.connection_made(self.transport)  # type: ignore[arg-type]
        assert proto.ingress is not None and proto.client is not None
        proto.ingress.batch = DatagramBatch(native=native)
        proto.ingress.handle_stun = self.stun  # type: ignore[method-assign]
        routes = {ch: sock.getsockname() for ch, sock in wire.peers.items()}
        self.server.allocations[proto.client] = SimpleNamespace(  # type: ignore[assignment]
            routes=routes,
            channels={**routes, UNPERMITTED: ("127.0.0.1", 9)},
            relay=SimpleNamespace(sock=wire.relay),
        )
        self.events: list[object] = []
        for chunk in chunks:
            proto.data_received(chunk)
        self.arrived()

    def arrived(self) -> None:
        for channel, sock in self.wire.peers.items():
            while True:
                try:
                    self.events.append((channel, sock.recv(70000)))
                except BlockingIOError:
                    break

    def stun(self, data: bytes, client: object) -> None:
        self.arrived()
        self.events.append(("stun", data))

    def segments(self) -> list[object]:
        """Per peer, in order, between STUN frames (peers are separate sockets: their relative
        order is not on any wire)."""
        out: list[object] = []
        current: dict[int, list[bytes]] = {}
        for event in self.events:
            if event[0] == "stun":  # type: ignore[index]
                out += [current, event]
                current = {}
            else:
                channel, payload = event  # type: ignore[misc]
                current.setdefault(channel, []).append(payload)
        return [*out, current]


def reference(stream: bytes) -> tuple[list[object], dict[str, int]]:
    """The slow path, byte-wise: one frame at a time, relayed or handled at once."""
    events: list[object] = []
    current: dict[int, list[bytes]] = {}
    counts = dict.fromkeys(("rx", "rx_bytes", "tx", "tx_bytes", "no_perm", "no_chan"), 0)
    pos = 0
    while len(stream) - pos >= 4:
        total = stream_frame_length(stream, pos)
        frame = stream[pos : pos + total]
        if len(frame) < total:
            break
        pos += total
        counts["rx"] += 1
        counts["rx_bytes"] += total
        if frame[0] & 0xC0 == 0:
            events += [current, ("stun", frame)]
            current = {}
            continue
        channel, length = int.from_bytes(frame[:2]), int.from_bytes(frame[2:4])
        if channel in ROUTED:
            current.setdefault(channel, []).append(frame[4 : 4 + length])
            counts["tx"] += 1
            counts["tx_bytes"] += length
        elif channel == UNPERMITTED:
            counts["no_perm"] += total
        else:
            counts["no_chan"] += total
    return [*events, current], counts


def stream_of(rng: random.Random, count: int, burst: int = 1) -> bytes:
    """ChannelData to the routed channels in bursts, some dropped ones, some STUN."""
    frames = []
    for i in range(count):
        pick = rng.random()
        if pick < 0.1:
            msg = Message(Method.BINDING, Class.REQUEST)
            msg.attributes["SOFTWARE"] = "x" * rng.randrange(0, 40)
            frames.append(msg.encode())
            continue
        channel = ROUTED[i // burst % len(ROUTED)]
        if pick < 0.15:
            channel = UNPERMITTED if pick < 0.125 else UNBOUND
        payload = rng.randbytes(rng.randrange(0, 300))
        frames.append(pack_channel_data(channel, payload, stream=True))
    return b"".join(frames)


def check(wire: SimpleNamespace, stream: bytes, chunks: list[bytes], native: bool) -> None:
    run = Run(wire, chunks, native)
    expected, counts = reference(stream)
    assert run.segments() == expected
    stats = run.server.stats
    assert (stats.rx_packets, stats.rx_bytes) == (counts["rx"], counts["rx_bytes"])
    assert (stats.cluster_tx_packets, stats.cluster_tx_bytes) == (counts["tx"], counts["tx_bytes"])
    assert stats.dropped_bytes[Drop.NO_PERMISSION] == counts["no_perm"]
    assert stats.dropped_bytes[Drop.NO_CHANNEL] == counts["no_chan"]
    assert stats.dropped_packets[Drop.SEND_ERROR] == 0
    assert not run.transport.closed


BATCHES = [pytest.param(False, id="portable")]
if NATIVE:
    BATCHES.append(pytest.param(True, id="sendmmsg"))


@pytest.mark.parametrize("native", BATCHES)
async def test_split_at_every_byte_boundary(wire: SimpleNamespace, native: bool) -> None:
    stream = stream_of(random.Random(7), 60, burst=3)
    check(wire, stream, [stream[i : i + 1] for i in range(len(stream))], native)
    for cut in range(1, len(stream), 5):  # two reads, cut at every 5th byte
        check(wire, stream, [stream[:cut], stream[cut:]], native)


@pytest.mark.parametrize("native", BATCHES)
async def test_many_frames_in_one_read_and_random_cuts(wire: SimpleNamespace, native: bool) -> None:
    rng = random.Random(11)
    stream = stream_of(rng, 400, burst=20)
    check(wire, stream, [stream], native)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(stream)), 40))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        check(wire, stream, pieces, native)


@pytest.mark.parametrize("native", BATCHES)
async def test_runs_longer_than_a_batch_to_one_peer(wire: SimpleNamespace, native: bool) -> None:
    rng = random.Random(3)
    stream = stream_of(rng, 3 * BATCH + 5, burst=10_000)  # nearly all to one peer, one read
    check(wire, stream, [stream], native)


async def test_every_payload_length_mod_4_is_padded_and_relayed(wire: SimpleNamespace) -> None:
    frames = [pack_channel_data(ROUTED[0], bytes([n]) * n, stream=True) for n in range(0, 13)]
    assert [len(f) % 4 for f in frames] == [0] * 13
    stream = b"".join(frames)
    run = Run(wire, [stream], NATIVE)
    assert run.segments() == [{ROUTED[0]: [bytes([n]) * n for n in range(0, 13)]}]


def frames_of(chunks: list[bytes]) -> tuple[_Transport, ListenerStats]:
    server = TurnServer(
        "l", ListenerStats(), PlaintextAuth("r", "u", "p"), lambda ip: True,
        "127.0.0.1", 40000, 40001,
    )  # fmt: skip
    proto = StreamConnectionProtocol(server)
    transport = _Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        proto.data_received(chunk)
    return transport, server.stats


async def test_garbage_closes_and_counts_what_arrived() -> None:
    transport, stats = frames_of([b"\x80\x00\x00\x10" + b"z" * 60])
    assert transport.closed
    assert (stats.rx_packets, stats.rx_bytes) == (1, 64)
    assert stats.dropped_packets[Drop.MALFORMED] == 1


async def test_frames_before_garbage_are_counted_then_it_closes() -> None:
    stream = pack_channel_data(UNBOUND, b"abcde", stream=True) + b"\x80\x00\x00\x10" + b"z" * 60
    transport, stats = frames_of([stream])
    assert transport.closed
    assert (stats.rx_packets, stats.rx_bytes) == (2, len(stream))
    assert stats.dropped_bytes[Drop.NO_CHANNEL] == 12
    assert stats.dropped_bytes[Drop.MALFORMED] == 64


async def test_oversized_frame_closes_the_connection() -> None:
    transport, stats = frames_of([pack_channel_data(0x4000, b"a" * 9000, stream=True)[:100]])
    assert transport.closed and stats.rx_packets == 1
    assert stats.dropped_packets[Drop.OVERSIZE] == 1


@pytest.mark.parametrize("native", BATCHES)
async def test_payloads_the_kernel_refuses_are_send_errors(
    wire: SimpleNamespace, native: bool
) -> None:
    one = pack_channel_data(ROUTED[0], b"abcde", stream=True)
    many = one * 3 + pack_channel_data(ROUTED[1], b"xy", stream=True)
    wire.relay.close()  # every send fails (EBADF)
    for chunks, frames, payload in (([one], 1, 5), ([many], 4, 17), ([one, many], 5, 22)):
        stats = Run(wire, chunks, native).server.stats
        assert (stats.rx_packets, stats.cluster_tx_packets) == (frames, 0)
        assert stats.dropped_packets[Drop.SEND_ERROR] == frames
        assert stats.dropped_bytes[Drop.SEND_ERROR] == payload
