"""STUN messages (RFC 8489): one ``Message`` type for both directions, and the codec.

Parsing is strict about framing and lenient about what it does not know: unknown
comprehension-optional attributes are skipped, unknown comprehension-required ones are reported
in ``Message.unknown_required`` so the server can answer 420.
"""

from __future__ import annotations

import binascii
import hmac
import os
import struct
from enum import IntEnum
from typing import Any

try:
    from _hashlib import hmac_new as _openssl_hmac
except ImportError:  # a Python built without OpenSSL
    _openssl_hmac = None  # type: ignore[assignment]

from .attributes import (
    BY_CODE,
    BY_NAME,
    MAGIC_COOKIE,
    REPEATABLE,
    is_comprehension_required,
    unpack_bytes,
)

HEADER_LENGTH = 20
_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_FINGERPRINT_XOR = 0x5354554E
_MI_TYPE = BY_NAME["MESSAGE-INTEGRITY"].code
_FP_TYPE = BY_NAME["FINGERPRINT"].code
_MI_LENGTH = 20
_MI_HEAD = _ATTR_HEADER.pack(_MI_TYPE, _MI_LENGTH)
_FP_HEAD = _ATTR_HEADER.pack(_FP_TYPE, 4)
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")  # by length % 4: to a multiple of 4
# What encode writes for each attribute name: (type code, packer); the two trailers are
# appended by encode itself when asked, never from ``attributes``.
_TRAILERS = frozenset({"MESSAGE-INTEGRITY", "FINGERPRINT"})
_SPLIT_TYPES: dict[int, tuple[int, int]] = {}  # message type -> (method, class), as met
# code -> (name, unpacker or None for byte strings, whose value is the slice itself,
# repeatable); without the two trailers, which parse_message handles itself.
_DECODERS = {
    code: (a.name, None if a.unpack is unpack_bytes else a.unpack, a.name in REPEATABLE)
    for code, a in BY_CODE.items()
    if a.name not in _TRAILERS
}
_ENCODERS = {a.name: (a.code, a.pack) for a in BY_NAME.values() if a.name not in _TRAILERS}


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


def _sha1_hmac_base(key: bytes) -> Any:
    """An HMAC-SHA1 object keyed with ``key``, to ``copy()`` per message.

    OpenSSL's own HMAC object (``_hashlib``) when there is one: keying it costs two SHA-1
    blocks and an algorithm lookup that a one-shot ``hmac.digest`` pays on every call (some
    7 us here), where a copy of a keyed object costs 2.5 us. ``hmac.new`` otherwise."""
    if _openssl_hmac is not None:
        return _openssl_hmac(key, digestmod="sha1")
    return hmac.new(key, digestmod="sha1")


_HMAC_KEYS_KEPT = 1024  # long-term keys whose keyed HMAC object is kept (bounded: users vary)
_hmac_bases: dict[bytes, Any] = {}


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA1(key, data), the MESSAGE-INTEGRITY value (RFC 8489 14.5), from a kept keyed
    object: each call setup signs three answers and checks three requests with one key."""
    base = _hmac_bases.get(key)
    if base is None:
        if len(_hmac_bases) >= _HMAC_KEYS_KEPT:
            _hmac_bases.clear()
        base = _hmac_bases[key] = _sha1_hmac_base(key)
    mac = base.copy()
    mac.update(data)
    digest: bytes = mac.digest()
    return digest


def new_transaction_id() -> bytes:
    return os.urandom(12)


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
        # Control path, but four times per call setup: one table lookup per attribute, the
        # parts joined once, and C calls for the HMAC (hmac_sha1) and the CRC.
        tid = self.transaction_id
        parts: list[bytes] = []
        append = parts.append
        for name, value in self.attributes.items():
            encoder = _ENCODERS.get(name)
            if encoder is None:
                if name in _TRAILERS:
                    continue
                raise KeyError(name)  # as BY_NAME[name] did: not an attribute we know
            head, pack = encoder
            for item in value if name in REPEATABLE and isinstance(value, list) else (value,):
                packed = pack(item, tid)
                size = len(packed)
                append(_ATTR_HEADER.pack(head, size))
                append(packed)
                if size & 3:
                    append(_PADS[size & 3])  # the value is padded to 4 bytes
        body = b"".join(parts)
        mtype = message_type(self.method, self.msg_class)
        length = len(body)
        if integrity_key is not None:
            header = _HEADER.pack(mtype, length + 24, MAGIC_COOKIE, tid)
            body += _MI_HEAD + hmac_sha1(integrity_key, header + body)
            length += 24
        if fingerprint:
            header = _HEADER.pack(mtype, length + 8, MAGIC_COOKIE, tid)
            crc = (binascii.crc32(header + body) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            body += _FP_HEAD + _U32.pack(crc)
            length += 8
        return _HEADER.pack(mtype, length, MAGIC_COOKIE, tid) + body

    def __bytes__(self) -> bytes:
        return self.encode()

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY of a parsed message against a long-term key."""
        if self.integrity_offset < 0:
            return False
        raw = self.raw
        # The header with the length cut after MESSAGE-INTEGRITY, then the attributes before it.
        length = self.integrity_offset + 4 + _MI_LENGTH - HEADER_LENGTH
        signed = raw[:2] + _U16.pack(length) + raw[4 : self.integrity_offset]
        expected = hmac_sha1(key, signed)
        return hmac.compare_digest(expected, self.attributes["MESSAGE-INTEGRITY"])


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test: top two bits zero and the magic cookie in place."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == b"\x21\x12\xa4\x42"


def parse_message(data: bytes) -> Message:
    """Decode one whole STUN message; raise ValueError with a precise reason if malformed.

    FINGERPRINT, when present, is verified here. MESSAGE-INTEGRITY needs the long-term key,
    which depends on USERNAME and REALM, so it is checked later with ``check_integrity``.
    """
    if type(data) is not bytes:
        data = bytes(data)  # values and ``raw`` are slices of it: bytes, whatever came in
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
    split = _SPLIT_TYPES.get(mtype)
    if split is None:  # at most 2**14 types: the top two bits are zero here
        split = _SPLIT_TYPES[mtype] = split_message_type(mtype)
    message = Message(split[0], split[1], transaction_id)
    message.raw = data
    attributes = message.attributes
    unpack_header = _ATTR_HEADER.unpack_from
    integrity = -1  # where MESSAGE-INTEGRITY starts, once seen
    pos = HEADER_LENGTH
    end = len(data)
    # Four messages per call setup, five or six attributes each: the common attribute (known,
    # before MESSAGE-INTEGRITY) takes the shortest way through the loop; FINGERPRINT,
    # MESSAGE-INTEGRITY and unknown attributes are not in _DECODERS and take the other branch.
    try:
        while pos < end:
            code, alen = unpack_header(data, pos)
            vend = pos + 4 + alen
            if vend > end:
                raise ValueError(f"STUN attribute 0x{code:04x} is truncated")
            decoder = _DECODERS.get(code)
            if decoder is None:
                if code == _FP_TYPE:
                    _check_fingerprint(data, pos, alen)
                    attributes["FINGERPRINT"] = _U32.unpack_from(data, pos + 4)[0]
                    break
                if integrity >= 0:
                    pass  # only FINGERPRINT may follow MESSAGE-INTEGRITY (RFC 8489 14.5)
                elif code == _MI_TYPE:
                    if alen != _MI_LENGTH:
                        raise ValueError("STUN MESSAGE-INTEGRITY must be 20 bytes")
                    integrity = pos
                    attributes["MESSAGE-INTEGRITY"] = data[pos + 4 : vend]
                elif is_comprehension_required(code):
                    message.unknown_required.append(code)
            elif integrity < 0:
                name, unpack, repeatable = decoder
                value = data[pos + 4 : vend]
                decoded = value if unpack is None else unpack(value, transaction_id)
                if repeatable:
                    attributes.setdefault(name, []).append(decoded)
                elif name not in attributes:
                    attributes[name] = decoded
            pos = vend + (-alen & 3)  # the value is padded to 4 bytes
    except struct.error:  # fewer than 4 bytes left for a header
        raise ValueError("STUN attribute header is truncated") from None
    message.integrity_offset = integrity
    return message


def _check_fingerprint(data: bytes, pos: int, alen: int) -> None:
    """FINGERPRINT at ``pos``: the last attribute, 4 bytes, and the CRC-32 of what precedes
    it, with the header's length cut after it, XOR 0x5354554E (RFC 8489 14.7)."""
    vend = pos + 4 + alen
    if vend + (-alen & 3) != len(data):
        raise ValueError("STUN FINGERPRINT is not the last attribute")
    if alen != 4:
        raise ValueError("STUN FINGERPRINT must be 4 bytes")
    signed = data[:2] + _U16.pack(vend - HEADER_LENGTH) + data[4:pos]
    crc = binascii.crc32(signed) ^ _FINGERPRINT_XOR
    if _U32.unpack_from(data, pos + 4)[0] != crc & 0xFFFFFFFF:
        raise ValueError("STUN FINGERPRINT does not match")
