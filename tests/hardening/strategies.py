"""Hypothesis strategies for STUN/TURN wire data: well-formed messages, hostile TLVs, frames.

"Well-formed" means what the codec can pack; "hostile" means right framing around attribute
values of any size, which is where parsers break.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from stunner.stun import CHANNEL_MAX, CHANNEL_MIN, Class, Message, Method, pack_channel_data
from tests.support import raw_stun, tlv

# No per-example deadline: a loaded CI machine must not turn slowness into a failure.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)
addresses = st.tuples(st.one_of(ipv4, ipv6), ports)
u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
# UTF-8 text without surrogates (they cannot be encoded), short enough to keep messages small.
texts = st.text(st.characters(codec="utf-8"), max_size=64)
blobs = st.binary(max_size=256)
transaction_ids = st.binary(min_size=12, max_size=12)

# Attribute name -> strategy for a value that its packer accepts.
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "MAPPED-ADDRESS": addresses,
    "USERNAME": texts,
    "ERROR-CODE": st.tuples(st.integers(300, 699), texts),
    "UNKNOWN-ATTRIBUTES": st.lists(u16, max_size=8),
    "CHANNEL-NUMBER": u16,
    "LIFETIME": u32,
    "XOR-PEER-ADDRESS": st.lists(addresses, min_size=1, max_size=3),
    "DATA": blobs,
    "REALM": texts,
    "NONCE": blobs,
    "XOR-RELAYED-ADDRESS": addresses,
    "REQUESTED-ADDRESS-FAMILY": u8,
    "EVEN-PORT": u8,
    "REQUESTED-TRANSPORT": u8,
    "DONT-FRAGMENT": st.just(True),
    "MESSAGE-INTEGRITY-SHA256": blobs,
    "XOR-MAPPED-ADDRESS": addresses,
    "RESERVATION-TOKEN": blobs,
    "PRIORITY": u32,
    "USE-CANDIDATE": st.just(True),
    "ADDITIONAL-ADDRESS-FAMILY": u8,
    "SOFTWARE": texts,
    "ALTERNATE-SERVER": addresses,
    "ICE-CONTROLLED": u64,
    "ICE-CONTROLLING": u64,
    "RESPONSE-ORIGIN": addresses,
    "OTHER-ADDRESS": addresses,
}

methods = st.sampled_from(list(Method))
classes = st.sampled_from(list(Class))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """A well-formed Message with any subset of the codec's attributes."""
    names = draw(st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=8))
    msg = Message(draw(methods), draw(classes), draw(transaction_ids))
    for name in names:
        msg.attributes[name] = draw(VALUES[name])
    return msg


# Attribute codes the codec knows, plus neighbours and unknown ones of both comprehension kinds.
KNOWN_CODES = (
    0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015,
    0x0016, 0x0017, 0x0018, 0x0019, 0x001A, 0x001C, 0x0020, 0x0022, 0x0024, 0x0025, 0x8000,
    0x8022, 0x8023, 0x8028, 0x8029, 0x802A, 0x802B, 0x802C,
)  # fmt: skip
attribute_codes = st.one_of(st.sampled_from(KNOWN_CODES), u16)


@st.composite
def hostile_tlvs(draw: st.DrawFn) -> bytes:
    """A body of attributes with known codes but arbitrary (often wrong-sized) values."""
    parts = draw(st.lists(st.tuples(attribute_codes, st.binary(max_size=40)), max_size=8))
    return b"".join(tlv(code, value) for code, value in parts)


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """A correct STUN header (any type) around hostile attributes."""
    mtype = draw(st.integers(0, 0x3FFF))
    return raw_stun(mtype, draw(transaction_ids), draw(hostile_tlvs()))


channels = st.integers(CHANNEL_MIN, CHANNEL_MAX)
payloads = st.binary(max_size=300)


@st.composite
def stream_frames(draw: st.DrawFn) -> bytes:
    """One frame as it travels on TCP/TLS: a STUN message or padded ChannelData."""
    if draw(st.booleans()):
        return draw(messages()).encode()
    return pack_channel_data(draw(channels), draw(payloads), stream=True)


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    """Flip bits at (position, bit) pairs (positions wrap), then optionally truncate."""
    out = bytearray(data)
    for pos, bit in flips:
        if out:
            out[pos % len(out)] ^= 1 << bit
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 7)), max_size=4),
    st.none() | st.integers(0, 2**16),
)


def attribute_body(msg: Message) -> bytes:
    """The encoded attributes of ``msg`` without its header."""
    return msg.encode()[20:]
