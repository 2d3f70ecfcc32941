"""Property tests for the STUN codec, ChannelData framing and TCP/TLS reframing.

Hostile input must fail in exactly one way (``ValueError``), well-formed input must survive a
round trip, and the stream reframer must cut the same frames whatever the TCP segmentation.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Hashable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stunner.config import LimitsConfig
from stunner.listener import StreamConnectionProtocol, StreamConnections
from stunner.stats import ListenerStats
from stunner.stun import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    is_channel_data,
    is_stun,
    pack_channel_data,
    parse_channel_data,
    parse_message,
)
from stunner.stun.channel import stream_frame_length
from tests.hardening.garbage import model_frames
from tests.hardening.strategies import (
    RELAXED,
    channels,
    hostile_messages,
    messages,
    mutate,
    mutations,
    payloads,
    stream_frames,
)

KEY = b"k" * 16


@RELAXED
@given(messages(), st.booleans(), st.booleans())
def test_well_formed_messages_round_trip(msg: Any, signed: bool, fingerprint: bool) -> None:
    wire = msg.encode(KEY if signed else None, fingerprint)
    assert is_stun(wire) and not is_channel_data(wire)
    parsed = parse_message(wire)
    assert (parsed.method, parsed.msg_class) == (msg.method, msg.msg_class)
    assert parsed.transaction_id == msg.transaction_id
    extra = {"MESSAGE-INTEGRITY"} if signed else set()
    extra |= {"FINGERPRINT"} if fingerprint else set()
    assert set(parsed.attributes) == set(msg.attributes) | extra
    for name, value in msg.attributes.items():
        assert parsed.attributes[name] == value, name
    assert parsed.check_integrity(KEY) == signed
    assert parsed.unknown_required == []


@RELAXED
@given(st.binary(max_size=600))
def test_arbitrary_bytes_fail_only_with_value_error(data: bytes) -> None:
    try:
        parsed = parse_message(data)
    except ValueError:
        return
    assert is_stun(data)
    assert len(parsed.raw) == len(data)


@RELAXED
@given(hostile_messages())
def test_hostile_attributes_fail_only_with_value_error(data: bytes) -> None:
    try:
        parsed = parse_message(data)
    except ValueError:
        return
    # What parses is internally consistent: unknown required codes really are unknown.
    assert all(code < 0x8000 for code in parsed.unknown_required)


@RELAXED
@given(messages(), mutations)
def test_mutated_messages_fail_only_with_value_error(msg: Any, mutation: Any) -> None:
    data = mutate(msg.encode(KEY, fingerprint=True), *mutation)
    with contextlib.suppress(ValueError):
        parse_message(data)


@RELAXED
@given(messages(), st.integers(0, 2**16), st.integers(0, 7))
def test_no_single_bit_flip_passes_as_authentic(msg: Any, pos: int, bit: int) -> None:
    """FINGERPRINT plus MESSAGE-INTEGRITY: a corrupted message is never both intact and signed."""
    data = mutate(msg.encode(KEY, fingerprint=True), [(pos, bit)], None)
    try:
        parsed = parse_message(data)
    except ValueError:
        return
    assert not ("FINGERPRINT" in parsed.attributes and parsed.check_integrity(KEY))


@RELAXED
@given(channels, payloads)
def test_channel_data_round_trip(channel: int, payload: bytes) -> None:
    datagram = pack_channel_data(channel, payload)
    assert parse_channel_data(datagram) == (channel, payload)
    assert is_channel_data(datagram) and not is_stun(datagram)
    framed = pack_channel_data(channel, payload, stream=True)
    assert len(framed) % 4 == 0
    assert stream_frame_length(framed[:4]) == len(framed)
    assert parse_channel_data(framed) == (channel, payload)


@RELAXED
@given(st.binary(max_size=80))
def test_channel_data_garbage_fails_only_with_value_error(data: bytes) -> None:
    assert not (is_stun(data) and is_channel_data(data))
    try:
        channel, payload = parse_channel_data(data)
    except ValueError:
        return
    assert CHANNEL_MIN <= channel <= CHANNEL_MAX and len(payload) <= len(data) - 4


# Stream reframing, against an independent model of RFC 8656 framing on TCP (garbage.py).


class RecordingServer:
    """What StreamConnectionProtocol needs from a TurnServer, recording STUN frames."""

    def __init__(self) -> None:
        self.stats = ListenerStats()
        self.limits = LimitsConfig()
        self.streams = StreamConnections()  # the listener's, here with one connection
        self.allocations: dict[Hashable, Any] = {}
        self.stun_frames: list[bytes] = []

    def handle_stun(self, frame: bytes, endpoint: object) -> None:
        self.stun_frames.append(frame)

    def connection_closed(self, key: Hashable) -> None:
        pass


class FakeStream:
    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.1", 5000) if name == "peername" else None

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        pass


def feed(stream: bytes, cuts: list[int]) -> tuple[RecordingServer, FakeStream]:
    server = RecordingServer()
    transport = FakeStream()
    proto = StreamConnectionProtocol(server, server.streams)  # type: ignore[arg-type]
    proto.connection_made(transport)  # type: ignore[arg-type]
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(bounds):
        if transport.closed:
            break  # a closed connection delivers nothing more
        proto.data_received(stream[start:end])
    proto.connection_lost(None)
    return server, transport


@RELAXED
@given(
    st.lists(stream_frames(), max_size=6),
    st.binary(max_size=40),
    st.lists(st.integers(0, 4000), max_size=10),
)
async def test_reframing_is_independent_of_segmentation(
    frames: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(frames) + tail
    server, transport = feed(stream, cuts)
    expected, garbage_at = model_frames(stream)
    stats = server.stats
    assert server.stun_frames == [f for f in expected if f[0] >> 6 == 0]
    framed_bytes = sum(map(len, expected))
    if garbage_at is None:
        assert not transport.closed
        assert (stats.rx_packets, stats.rx_bytes) == (len(expected), framed_bytes)
    else:
        # The unframeable rest counts as one packet with what had arrived of it, then closes.
        assert transport.closed
        assert stats.rx_packets == len(expected) + 1
        assert framed_bytes + 4 <= stats.rx_bytes <= len(stream)
    assert len(server.streams) == 0 and stats.connections_total == 1
