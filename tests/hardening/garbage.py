"""Hostile traffic for the live tests, reproducible from a seed, with the counts it must give.

UDP: every datagram counts (one packet, its length in bytes), malformed or not; which ones the
relay must call malformed follows from the codec, whose properties are tested separately.
TCP/TLS: ``model_frames`` is an independent statement of RFC 8656 framing on a stream, the
truth a listener's packet and byte counters must match.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from stunner.config import LimitsConfig
from stunner.stun import Class, Message, Method, pack_channel_data, parse_message

MAX_FRAME = LimitsConfig().max_message_size


def valid_messages() -> list[bytes]:
    """Well-formed STUN/TURN messages of every kind, unauthenticated, to mutate."""
    out = []
    for method in Method:
        for klass in Class:
            msg = Message(method, klass)
            if method == Method.ALLOCATE:
                msg.attributes["REQUESTED-TRANSPORT"] = 17
                msg.attributes["LIFETIME"] = 600
            if method in (Method.CREATE_PERMISSION, Method.SEND, Method.DATA):
                msg.attributes["XOR-PEER-ADDRESS"] = [("10.0.0.1", 5000)]
            if method == Method.CHANNEL_BIND:
                msg.attributes["CHANNEL-NUMBER"] = 0x4000
                msg.attributes["XOR-PEER-ADDRESS"] = [("10.0.0.1", 5000)]
            if method in (Method.SEND, Method.DATA):
                msg.attributes["DATA"] = b"x" * 32
            msg.attributes["SOFTWARE"] = "garbage"
            out.append(msg.encode(b"k" * 16 if klass == Class.REQUEST else None, True))
    return out


def mutated(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, a corrupted length or attribute header, truncation or extension."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        if choice == 0 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif choice == 1 and len(out) >= 4:
            struct.pack_into("!H", out, 2, rng.randrange(65536))
        elif choice == 2 and len(out) > 24:
            pos = 20 + 4 * rng.randrange((len(out) - 20) // 4)
            struct.pack_into("!H", out, min(pos, len(out) - 2), rng.randrange(65536))
        elif choice == 3:
            del out[rng.randrange(len(out) + 1) :]
        else:
            out += rng.randbytes(rng.randrange(1, 64))
    return bytes(out)


def udp_garbage(seed: int, count: int) -> Iterator[bytes]:
    """``count`` hostile datagrams: random bytes, mutated messages, stray ChannelData, valid
    unauthenticated requests, empty and oversized datagrams."""
    rng = random.Random(seed)
    pool = valid_messages()
    for _ in range(count):
        kind = rng.randrange(100)
        if kind < 35:
            yield rng.randbytes(rng.choice((0, 1, 3, 4, 19, 20, 21, rng.randrange(1500))))
        elif kind < 80:
            yield mutated(rng, rng.choice(pool))
        elif kind < 92:
            channel = rng.randrange(0x4000, 0x8000)  # every number the 01 prefix allows
            yield pack_channel_data(channel, rng.randbytes(rng.randrange(200)))[
                : rng.choice((None, 2, 5))
            ]
        elif kind < 98:
            yield rng.choice(pool[:8])  # Binding and Allocate requests: answered (or guarded)
        else:
            yield rng.randbytes(MAX_FRAME + rng.randrange(1, 2000))


def is_malformed(datagram: bytes) -> bool:
    """What the relay must count as malformed: STUN-demultiplexed and unparseable or too big."""
    if len(datagram) >= 4 and datagram[0] & 0xC0 == 0x40:
        return False  # ChannelData: without an allocation it is dropped, not malformed
    if len(datagram) > MAX_FRAME:
        return True
    try:
        parse_message(datagram)
    except ValueError:
        return True
    return False


def model_frames(stream: bytes, max_frame: int = MAX_FRAME) -> tuple[list[bytes], int | None]:
    """Whole frames in ``stream``, and the offset of an unframeable (or oversized) prefix."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 4:
        kind = stream[pos] >> 6
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        if kind == 0:
            total = 20 + length
        elif kind == 1:
            total = 4 + length + (-length % 4)
        else:
            return frames, pos
        if total > max_frame:
            return frames, pos
        if len(stream) - pos < total:
            break
        frames.append(stream[pos : pos + total])
        pos += total
    return frames, None


@dataclass
class StreamCase:
    """One hostile TCP/TLS connection: what it writes, and what the listener must count.

    Writes before the last end on frame boundaries, so the unframeable rest (if any) arrives
    in one piece and its byte count is known.
    """

    name: str
    writes: list[bytes]

    @property
    def stream(self) -> bytes:
        return b"".join(self.writes)

    def expected(self) -> tuple[int, int, bool]:
        """(rx packets, rx bytes, closed by the relay)."""
        frames, garbage_at = model_frames(self.stream)
        packets, size = len(frames), sum(map(len, frames))
        if garbage_at is None:
            return packets, size, False
        return packets + 1, size + len(self.stream) - garbage_at, True


def stream_cases(seed: int) -> list[StreamCase]:
    rng = random.Random(seed)
    pool = valid_messages()
    framed = [pack_channel_data(0x4000 + i, rng.randbytes(i * 7), stream=True) for i in range(6)]

    def junk_frames(n: int) -> bytes:
        """Well-framed junk: right length fields, hostile content."""
        out = b""
        for _ in range(n):
            body = rng.randbytes(4 * rng.randrange(40))
            out += struct.pack("!HH", rng.randrange(0x4000), len(body)) + rng.randbytes(16) + body
        return out

    cases = [
        StreamCase("random-bytes", [bytes([0x80 | rng.randrange(128)]) + rng.randbytes(300)]),
        StreamCase("frames-then-garbage", [pool[0] + framed[1], b"\xff" + rng.randbytes(99)]),
        StreamCase("oversized-stun-header", [struct.pack("!HH", 1, MAX_FRAME) + b"x" * 60]),
        StreamCase("oversized-channel-data", [struct.pack("!HH", 0x4000, 65535) + b"y" * 40]),
        StreamCase("truncated-frame", [pool[0], pool[3][: len(pool[3]) // 2]]),
        StreamCase("truncated-header", [framed[2], b"\x00\x01"]),
        StreamCase("stray-channel-data", [b"".join(framed)]),
        StreamCase("well-framed-junk", [junk_frames(12)]),
        StreamCase(
            "mutated-messages", [b"".join(mutated(rng, rng.choice(pool)) for _ in range(8))]
        ),
        StreamCase("valid-requests", [pool[0], pool[4], pool[0]]),
        StreamCase("zero-length-writes", [b"", pool[0], b""]),
    ]
    for i in range(12):
        cases.append(StreamCase(f"random-{i}", [rng.randbytes(rng.randrange(1, 2000))]))
    return cases


def slowloris_frame() -> bytes:
    """A frame that announces 1000 bytes of body: dripped, it never completes."""
    return struct.pack("!HHI12s", 0x0001, 1000, 0x2112A442, b"slowlorisxxx") + b"\x00" * 1000
