"""STUN messages (RFC 8489): one ``Message`` type for both directions, and the codec.

Parsing is strict about framing and lenient about what it does not know: unknown
comprehension-optional attributes are skipped, unknown comprehension-required ones are reported
in ``Message.unknown_required`` so the server can answer 420.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from enum import IntEnum
from typing import Any

from .attributes import BY_CODE, BY_NAME, MAGIC_COOKIE, REPEATABLE, is_comprehension_required

HEADER_LENGTH = 20
_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_FINGERPRINT_XOR = 0x5354554E
_MI_TYPE = BY_NAME["MESSAGE-INTEGRITY"].code
_FP_TYPE = BY_NAME["FINGERPRINT"].code
_MI_LENGTH = 20


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Class(IntEnum):
    REQUEST = 0x000
    INDICATION = 0x010
    SUCCESS = 0x100
    ERROR = 0x110


def new_transaction_id() -> bytes:
    return os.urandom(12)


def _padding(length: int) -> int:
    return (4 - length % 4) % 4


def message_type(method: int, klass: int) -> int:
    """Interleave the 12 method bits with the 2 class bits (RFC 8489 5)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | klass


def split_message_type(value: int) -> tuple[int, int]:
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    return method, value & 0x0110


class Message:
    """A STUN message. ``attributes`` is keyed by RFC attribute names."""

    __slots__ = (
        "attributes",
        "integrity_offset",
        "method",
        "msg_class",
        "raw",
        "transaction_id",
        "unknown_required",
    )

    def __init__(
        self,
        method: int,
        msg_class: int,
        transaction_id: bytes | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.msg_class = msg_class
        self.transaction_id = transaction_id if transaction_id is not None else new_transaction_id()
        self.attributes: dict[str, Any] = attributes if attributes is not None else {}
        self.unknown_required: list[int] = []
        # Set by parse_message: the wire bytes and where MESSAGE-INTEGRITY starts in them.
        self.raw = b""
        self.integrity_offset = -1

    def __repr__(self) -> str:
        try:
            name = f"{Method(self.method).name}-{Class(self.msg_class).name}"
        except ValueError:
            name = f"0x{self.method:03x}-0x{self.msg_class:03x}"
        return f"Message({name}, tid={self.transaction_id.hex()}, attrs={sorted(self.attributes)})"

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = False) -> bytes:
        """Wire bytes, with MESSAGE-INTEGRITY and FINGERPRINT appended when asked."""
        body = bytearray()
        for name, value in self.attributes.items():
            if name in ("MESSAGE-INTEGRITY", "FINGERPRINT"):
                continue
            attr = BY_NAME[name]
            values = value if name in REPEATABLE and isinstance(value, list) else [value]
            for item in values:
                packed = attr.pack(item, self.transaction_id)
                body += _ATTR_HEADER.pack(attr.code, len(packed))
                body += packed + bytes(_padding(len(packed)))
        mtype = message_type(self.method, self.msg_class)
        if integrity_key is not None:
            header = _HEADER.pack(mtype, len(body) + 24, MAGIC_COOKIE, self.transaction_id)
            digest = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
            body += _ATTR_HEADER.pack(_MI_TYPE, _MI_LENGTH) + digest
        if fingerprint:
            header = _HEADER.pack(mtype, len(body) + 8, MAGIC_COOKIE, self.transaction_id)
            crc = (binascii.crc32(header + body) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            body += _ATTR_HEADER.pack(_FP_TYPE, 4) + struct.pack("!I", crc)
        return _HEADER.pack(mtype, len(body), MAGIC_COOKIE, self.transaction_id) + bytes(body)

    def __bytes__(self) -> bytes:
        return self.encode()

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY of a parsed message against a long-term key."""
        if self.integrity_offset < 0:
            return False
        mi_end = self.integrity_offset + 4 + _MI_LENGTH
        header = bytearray(self.raw[:HEADER_LENGTH])
        struct.pack_into("!H", header, 2, mi_end - HEADER_LENGTH)
        signed = bytes(header) + self.raw[HEADER_LENGTH : self.integrity_offset]
        expected = hmac.new(key, signed, hashlib.sha1).digest()
        return hmac.compare_digest(expected, self.attributes["MESSAGE-INTEGRITY"])


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test: top two bits zero and the magic cookie in place."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == b"\x21\x12\xa4\x42"


def parse_message(data: bytes) -> Message:
    """Decode one whole STUN message; raise ValueError with a precise reason if malformed.

    FINGERPRINT, when present, is verified here. MESSAGE-INTEGRITY needs the long-term key,
    which depends on USERNAME and REALM, so it is checked later with ``check_integrity``.
    """
    if len(data) < HEADER_LENGTH:
        raise ValueError("STUN message is shorter than its 20-byte header")
    mtype, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if mtype & 0xC000:
        raise ValueError("STUN message type has its top two bits set")
    if cookie != MAGIC_COOKIE:
        raise ValueError("STUN message has a bad magic cookie")
    if length % 4:
        raise ValueError("STUN message length is not a multiple of 4")
    if len(data) != HEADER_LENGTH + length:
        raise ValueError("STUN message length does not match the datagram length")
    method, msg_class = split_message_type(mtype)
    message = Message(method, msg_class, transaction_id)
    message.raw = data
    attributes = message.attributes
    pos = HEADER_LENGTH
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise ValueError("STUN attribute header is truncated")
        code, alen = _ATTR_HEADER.unpack_from(data, pos)
        vstart = pos + 4
        vend = vstart + alen
        if vend > end:
            raise ValueError(f"STUN attribute 0x{code:04x} is truncated")
        value = data[vstart:vend]
        if code == _FP_TYPE:
            if vend + _padding(alen) != end:
                raise ValueError("STUN FINGERPRINT is not the last attribute")
            if alen != 4:
                raise ValueError("STUN FINGERPRINT must be 4 bytes")
            header = bytearray(data[:HEADER_LENGTH])
            struct.pack_into("!H", header, 2, vend - HEADER_LENGTH)
            crc = binascii.crc32(bytes(header) + data[HEADER_LENGTH:pos]) ^ _FINGERPRINT_XOR
            if struct.unpack("!I", value)[0] != crc & 0xFFFFFFFF:
                raise ValueError("STUN FINGERPRINT does not match")
            attributes["FINGERPRINT"] = struct.unpack("!I", value)[0]
            break
        if message.integrity_offset >= 0:
            # Only FINGERPRINT may follow MESSAGE-INTEGRITY; the rest is ignored (RFC 8489 14.5).
            pos = vend + _padding(alen)
            continue
        attr = BY_CODE.get(code)
        if attr is None:
            if is_comprehension_required(code):
                message.unknown_required.append(code)
        else:
            if code == _MI_TYPE:
                if alen != _MI_LENGTH:
                    raise ValueError("STUN MESSAGE-INTEGRITY must be 20 bytes")
                message.integrity_offset = pos
            decoded = attr.unpack(value, transaction_id)
            if attr.name in REPEATABLE:
                attributes.setdefault(attr.name, []).append(decoded)
            elif attr.name not in attributes:
                attributes[attr.name] = decoded
        pos = vend + _padding(alen)
    return message
