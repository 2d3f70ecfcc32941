"""STUN/TURN attribute codecs: one row per attribute type, as RFC 8489 and RFC 8656 name them.

Each attribute shape has a pack/unpack pair over plain values (addresses are ``(host, port)``
tuples). XOR-encoded addresses need the transaction ID, so every unpacker takes it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from ..ipv4 import ipv4_packed

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02

Address = tuple[str, int]
Packer = Callable[[Any, bytes], bytes]
Unpacker = Callable[[bytes, bytes], Any]


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


_IPV4_HEAD = struct.Struct("!BBHI")  # reserved, family, port, IPv4 address as one integer
_XOR_PORT = MAGIC_COOKIE >> 16


def pack_address(value: Address, transaction_id: bytes = b"") -> bytes:
    host, port = value
    packed = ipv4_packed(host)
    if packed is not None:
        return struct.pack("!BBH", 0, _FAMILY_IPV4, port) + packed
    ip = ipaddress.ip_address(host)
    family = _FAMILY_IPV4 if ip.version == 4 else _FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + ip.packed


def unpack_address(data: bytes, transaction_id: bytes = b"") -> Address:
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    _, family, port = struct.unpack_from("!BBH", data)
    raw = data[4:]
    if family == _FAMILY_IPV4:
        if len(raw) != 4:
            raise ValueError("STUN address has invalid length for IPv4")
        return socket.inet_ntoa(raw), port  # the text ipaddress gives, without its cost
    elif family == _FAMILY_IPV6:
        if len(raw) != 16:
            raise ValueError("STUN address has invalid length for IPv6")
    else:
        raise ValueError("STUN address has unknown protocol")
    return str(ipaddress.ip_address(raw)), port


def pack_xor_address(value: Address, transaction_id: bytes) -> bytes:
    packed = ipv4_packed(value[0])
    if packed is not None:  # IPv4: the XOR is two integer operations
        ip = int.from_bytes(packed, "big") ^ MAGIC_COOKIE
        return _IPV4_HEAD.pack(0, _FAMILY_IPV4, value[1] ^ _XOR_PORT, ip)
    packed = pack_address(value)
    head = packed[:2] + _xor(packed[2:4], _COOKIE_BYTES)
    return head + _xor(packed[4:], _COOKIE_BYTES + transaction_id)


def unpack_xor_address(data: bytes, transaction_id: bytes) -> Address:
    if len(data) == 8 and data[1] == _FAMILY_IPV4:
        _, _, port, ip = _IPV4_HEAD.unpack(data)
        return socket.inet_ntoa((ip ^ MAGIC_COOKIE).to_bytes(4, "big")), port ^ _XOR_PORT
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    plain = (
        data[:2] + _xor(data[2:4], _COOKIE_BYTES) + _xor(data[4:], _COOKIE_BYTES + transaction_id)
    )
    return unpack_address(plain)


def pack_bytes(value: bytes, transaction_id: bytes = b"") -> bytes:
    return bytes(value)


def unpack_bytes(data: bytes, transaction_id: bytes = b"") -> bytes:
    return bytes(data)


def pack_string(value: str, transaction_id: bytes = b"") -> bytes:
    return value.encode("utf-8")


def unpack_string(data: bytes, transaction_id: bytes = b"") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("STUN string attribute is not valid UTF-8") from exc


def pack_u32(value: int, transaction_id: bytes = b"") -> bytes:
    return struct.pack("!I", value)


def unpack_u32(data: bytes, transaction_id: bytes = b"") -> int:
    if len(data) != 4:
        raise ValueError("STUN 32-bit attribute must be 4 bytes")
    return int(struct.unpack("!I", data)[0])


def pack_u64(value: int, transaction_id: bytes = b"") -> bytes:
    return struct.pack("!Q", value)


def unpack_u64(data: bytes, transaction_id: bytes = b"") -> int:
    if len(data) != 8:
        raise ValueError("STUN 64-bit attribute must be 8 bytes")
    return int(struct.unpack("!Q", data)[0])


def pack_u16_rffu(value: int, transaction_id: bytes = b"") -> bytes:
    """A 16-bit value followed by 16 reserved bits (CHANNEL-NUMBER)."""
    return struct.pack("!HH", value, 0)


def unpack_u16_rffu(data: bytes, transaction_id: bytes = b"") -> int:
    if len(data) != 4:
        raise ValueError("STUN CHANNEL-NUMBER must be 4 bytes")
    return int(struct.unpack_from("!H", data)[0])


def pack_u8_rffu(value: int, transaction_id: bytes = b"") -> bytes:
    """An 8-bit value followed by 24 reserved bits (REQUESTED-TRANSPORT, -ADDRESS-FAMILY)."""
    return struct.pack("!B3x", value)


def unpack_u8_rffu(data: bytes, transaction_id: bytes = b"") -> int:
    if len(data) != 4:
        raise ValueError("STUN 8-bit attribute must be 4 bytes")
    return data[0]


def pack_u8(value: int, transaction_id: bytes = b"") -> bytes:
    return struct.pack("!B", value)


def unpack_u8(data: bytes, transaction_id: bytes = b"") -> int:
    if len(data) != 1:
        raise ValueError("STUN EVEN-PORT must be 1 byte")
    return data[0]


def pack_empty(value: Any, transaction_id: bytes = b"") -> bytes:
    return b""


def unpack_empty(data: bytes, transaction_id: bytes = b"") -> bool:
    if data:
        raise ValueError("STUN flag attribute must be empty")
    return True


class ErrorCode(NamedTuple):
    code: int
    reason: str


def pack_error_code(value: tuple[int, str], transaction_id: bytes = b"") -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def unpack_error_code(data: bytes, transaction_id: bytes = b"") -> ErrorCode:
    if len(data) < 4:
        raise ValueError("STUN ERROR-CODE is less than 4 bytes")
    _, klass, number = struct.unpack_from("!HBB", data)
    return ErrorCode(klass * 100 + number, data[4:].decode("utf-8", errors="replace"))


def pack_u16_list(value: list[int], transaction_id: bytes = b"") -> bytes:
    return b"".join(struct.pack("!H", v) for v in value)


def unpack_u16_list(data: bytes, transaction_id: bytes = b"") -> list[int]:
    if len(data) % 2:
        raise ValueError("STUN UNKNOWN-ATTRIBUTES has an odd length")
    return [int(v) for (v,) in struct.iter_unpack("!H", data)]


class AttributeType(NamedTuple):
    code: int
    name: str
    pack: Packer
    unpack: Unpacker


# One row per attribute: (type code, RFC name, packer, unpacker).
ATTRIBUTES: tuple[AttributeType, ...] = tuple(
    AttributeType(*row)
    for row in (
        (0x0001, "MAPPED-ADDRESS", pack_address, unpack_address),
        (0x0006, "USERNAME", pack_string, unpack_string),
        (0x0008, "MESSAGE-INTEGRITY", pack_bytes, unpack_bytes),
        (0x0009, "ERROR-CODE", pack_error_code, unpack_error_code),
        (0x000A, "UNKNOWN-ATTRIBUTES", pack_u16_list, unpack_u16_list),
        (0x000C, "CHANNEL-NUMBER", pack_u16_rffu, unpack_u16_rffu),
        (0x000D, "LIFETIME", pack_u32, unpack_u32),
        (0x0012, "XOR-PEER-ADDRESS", pack_xor_address, unpack_xor_address),
        (0x0013, "DATA", pack_bytes, unpack_bytes),
        (0x0014, "REALM", pack_string, unpack_string),
        (0x0015, "NONCE", pack_bytes, unpack_bytes),
        (0x0016, "XOR-RELAYED-ADDRESS", pack_xor_address, unpack_xor_address),
        (0x0017, "REQUESTED-ADDRESS-FAMILY", pack_u8_rffu, unpack_u8_rffu),
        (0x0018, "EVEN-PORT", pack_u8, unpack_u8),
        (0x0019, "REQUESTED-TRANSPORT", pack_u8_rffu, unpack_u8_rffu),
        (0x001A, "DONT-FRAGMENT", pack_empty, unpack_empty),
        (0x001C, "MESSAGE-INTEGRITY-SHA256", pack_bytes, unpack_bytes),
        (0x0020, "XOR-MAPPED-ADDRESS", pack_xor_address, unpack_xor_address),
        (0x0022, "RESERVATION-TOKEN", pack_bytes, unpack_bytes),
        (0x0024, "PRIORITY", pack_u32, unpack_u32),
        (0x0025, "USE-CANDIDATE", pack_empty, unpack_empty),
        (0x8000, "ADDITIONAL-ADDRESS-FAMILY", pack_u8_rffu, unpack_u8_rffu),
        (0x8022, "SOFTWARE", pack_string, unpack_string),
        (0x8023, "ALTERNATE-SERVER", pack_address, unpack_address),
        (0x8028, "FINGERPRINT", pack_u32, unpack_u32),
        (0x8029, "ICE-CONTROLLED", pack_u64, unpack_u64),
        (0x802A, "ICE-CONTROLLING", pack_u64, unpack_u64),
        (0x802B, "RESPONSE-ORIGIN", pack_address, unpack_address),
        (0x802C, "OTHER-ADDRESS", pack_address, unpack_address),
    )
)
BY_CODE: dict[int, AttributeType] = {a.code: a for a in ATTRIBUTES}
BY_NAME: dict[str, AttributeType] = {a.name: a for a in ATTRIBUTES}

# Attributes that may appear more than once and are kept as a list (RFC 8656 section 9).
REPEATABLE = frozenset({"XOR-PEER-ADDRESS"})


def is_comprehension_required(code: int) -> bool:
    """Types below 0x8000 must be understood, or the request fails with 420 (RFC 8489 14)."""
    return code < 0x8000
