"""STUN codec: RFC 5769 vectors, round trips, and exact errors for malformed input."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from stunner.stun import (
    Class,
    Message,
    Method,
    is_channel_data,
    is_stun,
    pack_channel_data,
    parse_channel_data,
    parse_message,
)
from stunner.stun.channel import stream_frame_length
from stunner.stun.message import message_type, split_message_type

DATA = Path(__file__).parent / "data"
SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"


def vector(name: str) -> bytes:
    return bytes.fromhex((DATA / f"rfc5769-{name}.hex").read_text().strip())


def test_rfc5769_sample_request() -> None:
    msg = parse_message(vector("request"))
    assert (msg.method, msg.msg_class) == (Method.BINDING, Class.REQUEST)
    assert msg.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert msg.attributes["SOFTWARE"] == "STUN test client"
    assert msg.attributes["PRIORITY"] == 0x6E0001FF
    assert msg.attributes["ICE-CONTROLLED"] == 0x932FF9B151263B36
    assert msg.attributes["USERNAME"] == "evtj:h6vY"
    assert msg.check_integrity(SHORT_TERM_PASSWORD)
    assert not msg.check_integrity(b"wrong")
    assert msg.unknown_required == []


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("ipv4-response", ("192.0.2.1", 32853)),
        ("ipv6-response", ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_rfc5769_responses(name: str, address: tuple[str, int]) -> None:
    msg = parse_message(vector(name))
    assert (msg.method, msg.msg_class) == (Method.BINDING, Class.SUCCESS)
    assert msg.attributes["SOFTWARE"] == "test vector"
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == address
    assert msg.check_integrity(SHORT_TERM_PASSWORD)


def test_rfc5769_responses_reencode_to_the_same_layout() -> None:
    """Re-encoding gives the RFC's length and attributes; only the padding bytes differ
    (the vectors pad SOFTWARE with spaces, we pad with zeros), and so the HMAC and CRC."""
    for name in ("ipv4-response", "ipv6-response"):
        wire = vector(name)
        msg = parse_message(wire)
        again = Message(msg.method, msg.msg_class, msg.transaction_id)
        again.attributes["SOFTWARE"] = msg.attributes["SOFTWARE"]
        again.attributes["XOR-MAPPED-ADDRESS"] = msg.attributes["XOR-MAPPED-ADDRESS"]
        ours = again.encode(SHORT_TERM_PASSWORD, fingerprint=True)
        assert len(ours) == len(wire)
        assert ours[:20] == wire[:20]
        padded_software_end = 20 + 4 + 11
        assert (
            ours[padded_software_end + 1 : padded_software_end + 13]
            == (wire[padded_software_end + 1 : padded_software_end + 13])
        )
        assert parse_message(ours).check_integrity(SHORT_TERM_PASSWORD)


def test_rfc5769_long_term_request() -> None:
    msg = parse_message(vector("long-term-request"))
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.attributes["USERNAME"] == username
    assert msg.attributes["REALM"] == "example.org"
    assert msg.attributes["NONCE"] == b"f//499k954d6OL34oL9FSTvy64sA"
    key = hashlib.md5(f"{username}:example.org:TheMatrIX".encode()).digest()
    assert msg.check_integrity(key)


def test_message_type_interleaving() -> None:
    assert message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert message_type(Method.BINDING, Class.SUCCESS) == 0x0101
    assert message_type(Method.ALLOCATE, Class.ERROR) == 0x0113
    assert message_type(Method.SEND, Class.INDICATION) == 0x0016
    assert message_type(Method.DATA, Class.INDICATION) == 0x0017
    for method in Method:
        for klass in Class:
            assert split_message_type(message_type(method, klass)) == (method, klass)


def test_round_trip_with_integrity_and_fingerprint() -> None:
    msg = Message(Method.CREATE_PERMISSION, Class.REQUEST)
    msg.attributes["XOR-PEER-ADDRESS"] = [("10.0.0.1", 1), ("10.0.0.2", 2)]
    msg.attributes["USERNAME"] = "user"
    msg.attributes["REALM"] = "realm"
    msg.attributes["NONCE"] = b"nonce"
    wire = msg.encode(b"k" * 16, fingerprint=True)
    parsed = parse_message(wire)
    assert parsed.attributes["XOR-PEER-ADDRESS"] == [("10.0.0.1", 1), ("10.0.0.2", 2)]
    assert parsed.check_integrity(b"k" * 16)
    assert is_stun(wire)
    assert not is_channel_data(wire)


def test_error_code_and_unknown_attributes_round_trip() -> None:
    msg = Message(Method.ALLOCATE, Class.ERROR)
    msg.attributes["ERROR-CODE"] = (420, "Unknown Attribute")
    msg.attributes["UNKNOWN-ATTRIBUTES"] = [0x7777, 0x0003]
    parsed = parse_message(msg.encode())
    assert parsed.attributes["ERROR-CODE"] == (420, "Unknown Attribute")
    assert parsed.attributes["UNKNOWN-ATTRIBUTES"] == [0x7777, 0x0003]


def _with_attribute(code: int, value: bytes) -> bytes:
    body = struct.pack("!HH", code, len(value)) + value + bytes(-len(value) % 4)
    return struct.pack("!HHI12s", 0x0003, len(body), 0x2112A442, b"t" * 12) + body


def test_unknown_attributes_are_sorted_by_comprehension() -> None:
    wire = _with_attribute(0x7777, b"abcd")
    assert parse_message(wire).unknown_required == [0x7777]
    wire = _with_attribute(0xC0DE, b"abcd")
    assert parse_message(wire).unknown_required == []


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01\x00", "STUN message is shorter than its 20-byte header"),
        (b"\xc0\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"t" * 12, "top two bits"),
        (b"\x00\x01\x00\x00" + b"\x00\x00\x00\x00" + b"t" * 12, "bad magic cookie"),
        (b"\x00\x01\x00\x02" + b"\x21\x12\xa4\x42" + b"t" * 12 + b"xx", "multiple of 4"),
        (b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"t" * 12, "does not match"),
        (
            _with_attribute(0x0013, b"abcdefgh")[:-4].replace(b"\x00\x0c", b"\x00\x08", 1),
            "truncated",
        ),
        (_with_attribute(0x0020, b"\x00\x01\x00"), "less than 4 bytes"),
        (_with_attribute(0x0020, b"\x00\x01\x00\x01\x01"), "invalid length for IPv4"),
        (_with_attribute(0x0020, b"\x00\x03\x00\x01\x01\x02\x03\x04"), "unknown protocol"),
        (_with_attribute(0x000D, b"\x00\x01"), "32-bit attribute must be 4 bytes"),
        (_with_attribute(0x0006, b"\xff\xfe"), "not valid UTF-8"),
    ],
)
def test_malformed_messages_raise_precise_errors(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_message(data)


def test_bad_fingerprint_is_rejected() -> None:
    wire = bytearray(Message(Method.BINDING, Class.REQUEST).encode(fingerprint=True))
    wire[-1] ^= 0xFF
    with pytest.raises(ValueError, match="FINGERPRINT does not match"):
        parse_message(bytes(wire))


def test_attributes_after_integrity_are_ignored() -> None:
    msg = Message(Method.REFRESH, Class.REQUEST)
    msg.attributes["LIFETIME"] = 600
    wire = msg.encode(b"key")
    extra = struct.pack("!HHI", 0x000D, 4, 0)  # a second LIFETIME after MESSAGE-INTEGRITY
    body_len = struct.unpack_from("!H", wire, 2)[0] + len(extra)
    tampered = wire[:2] + struct.pack("!H", body_len) + wire[4:] + extra
    parsed = parse_message(tampered)
    assert parsed.attributes["LIFETIME"] == 600
    assert parsed.check_integrity(b"key")


def test_channel_data_framing() -> None:
    assert pack_channel_data(0x4000, b"abcde") == b"\x40\x00\x00\x05abcde"
    assert pack_channel_data(0x4000, b"abcde", stream=True) == b"\x40\x00\x00\x05abcde\x00\x00\x00"
    assert parse_channel_data(b"\x40\x01\x00\x02hi\x00\x00") == (0x4001, b"hi")
    with pytest.raises(ValueError, match="out of range"):
        parse_channel_data(b"\x3f\xff\x00\x00")
    with pytest.raises(ValueError, match="shorter than its length"):
        parse_channel_data(b"\x40\x00\x00\x09abc")
    assert stream_frame_length(b"\x40\x00\x00\x05") == 12
    assert stream_frame_length(b"\x40\x00\x00\x08") == 12
    assert stream_frame_length(b"\x00\x01\x00\x08") == 28
    assert stream_frame_length(b"\x80\x00\x00\x00") == 0
