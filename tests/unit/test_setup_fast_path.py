"""The call-setup fast paths give what the straightforward code gave, byte for byte.

Each reference here is the plain implementation the fast path replaced (ipaddress for
addresses, a fresh ``hmac.new`` per MAC, the attribute loop with one call per attribute, a
nonce MAC computed every time, an expiry scan every second, ``logging.Formatter``): the fast
path must agree with it on well-formed input, on hostile input (the same error, or the same
result), and across the bounds of its caches.
"""

from __future__ import annotations

import binascii
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stunner import cluster, logs
from stunner.auth import PlaintextAuth
from stunner.stun import Class, Message, Method, parse_message
from stunner.stun import attributes as attrs
from stunner.stun import message as codec
from stunner.stun.attributes import BY_CODE, BY_NAME, MAGIC_COOKIE, REPEATABLE
from stunner.turn import auth as turn_auth
from stunner.turn.allocation import Allocation
from stunner.turn.auth import RequestAuth
from stunner.turn.relay import RelayPortAllocator
from tests.hardening.strategies import RELAXED, hostile_messages, messages

KEY = b"k" * 16
TID = bytes(range(12))
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")


# references: the code before the fast paths


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=False))


def ref_pack_address(value: tuple[str, int], tid: bytes = b"") -> bytes:
    ip = ipaddress.ip_address(value[0])
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, value[1]) + ip.packed


def ref_unpack_address(data: bytes, tid: bytes = b"") -> tuple[str, int]:
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    _, family, port = struct.unpack_from("!BBH", data)
    raw = data[4:]
    if family == 1:
        if len(raw) != 4:
            raise ValueError("STUN address has invalid length for IPv4")
    elif family == 2:
        if len(raw) != 16:
            raise ValueError("STUN address has invalid length for IPv6")
    else:
        raise ValueError("STUN address has unknown protocol")
    return str(ipaddress.ip_address(raw)), port


def ref_pack_xor_address(value: tuple[str, int], tid: bytes) -> bytes:
    cookie = struct.pack("!I", MAGIC_COOKIE)
    packed = ref_pack_address(value)
    return packed[:2] + _xor(packed[2:4], cookie) + _xor(packed[4:], cookie + tid)


def ref_unpack_xor_address(data: bytes, tid: bytes) -> tuple[str, int]:
    if len(data) < 4:
        raise ValueError("STUN address length is less than 4 bytes")
    cookie = struct.pack("!I", MAGIC_COOKIE)
    return ref_unpack_address(data[:2] + _xor(data[2:4], cookie) + _xor(data[4:], cookie + tid))


def ref_encode(msg: Message, key: bytes | None = None, fingerprint: bool = False) -> bytes:
    body = bytearray()
    for name, value in msg.attributes.items():
        if name in ("MESSAGE-INTEGRITY", "FINGERPRINT"):
            continue
        attr = BY_NAME[name]
        values = value if name in REPEATABLE and isinstance(value, list) else [value]
        for item in values:
            packed = attr.pack(item, msg.transaction_id)
            body += _ATTR.pack(attr.code, len(packed)) + packed + bytes(-len(packed) % 4)
    mtype = codec.message_type(msg.method, msg.msg_class)
    if key is not None:
        header = _HEADER.pack(mtype, len(body) + 24, MAGIC_COOKIE, msg.transaction_id)
        digest = hmac.new(key, header + body, hashlib.sha1).digest()
        body += _ATTR.pack(0x0008, 20) + digest
    if fingerprint:
        header = _HEADER.pack(mtype, len(body) + 8, MAGIC_COOKIE, msg.transaction_id)
        crc = (binascii.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += _ATTR.pack(0x8028, 4) + struct.pack("!I", crc)
    return _HEADER.pack(mtype, len(body), MAGIC_COOKIE, msg.transaction_id) + bytes(body)


def ref_parse(data: bytes) -> tuple[int, int, bytes, dict[str, Any], list[int], int]:
    """(method, class, transaction id, attributes, unknown_required, integrity offset)."""
    if len(data) < 20:
        raise ValueError("STUN message is shorter than its 20-byte header")
    mtype, length, cookie, tid = _HEADER.unpack_from(data)
    if mtype & 0xC000:
        raise ValueError("STUN message type has its top two bits set")
    if cookie != MAGIC_COOKIE:
        raise ValueError("STUN message has a bad magic cookie")
    if length % 4:
        raise ValueError("STUN message length is not a multiple of 4")
    if len(data) != 20 + length:
        raise ValueError("STUN message length does not match the datagram length")
    found: dict[str, Any] = {}
    unknown: list[int] = []
    integrity = -1
    pos, end = 20, len(data)
    while pos < end:
        if end - pos < 4:
            raise ValueError("STUN attribute header is truncated")
        code, alen = _ATTR.unpack_from(data, pos)
        vend = pos + 4 + alen
        if vend > end:
            raise ValueError(f"STUN attribute 0x{code:04x} is truncated")
        value = data[pos + 4 : vend]
        if code == 0x8028:
            if vend + (-alen % 4) != end:
                raise ValueError("STUN FINGERPRINT is not the last attribute")
            if alen != 4:
                raise ValueError("STUN FINGERPRINT must be 4 bytes")
            header = bytearray(data[:20])
            struct.pack_into("!H", header, 2, vend - 20)
            crc = binascii.crc32(bytes(header) + data[20:pos]) ^ 0x5354554E
            if struct.unpack("!I", value)[0] != crc & 0xFFFFFFFF:
                raise ValueError("STUN FINGERPRINT does not match")
            found["FINGERPRINT"] = struct.unpack("!I", value)[0]
            break
        if integrity < 0:
            attr = BY_CODE.get(code)
            if attr is None:
                if code < 0x8000:
                    unknown.append(code)
            else:
                if code == 0x0008:
                    if alen != 20:
                        raise ValueError("STUN MESSAGE-INTEGRITY must be 20 bytes")
                    integrity = pos
                decoded = REF_UNPACK.get(attr.name, attr.unpack)(value, tid)
                if attr.name in REPEATABLE:
                    found.setdefault(attr.name, []).append(decoded)
                elif attr.name not in found:
                    found[attr.name] = decoded
        pos = vend + (-alen % 4)
    method, klass = codec.split_message_type(mtype)
    return method, klass, tid, found, unknown, integrity


REF_UNPACK = {
    name: ref_unpack_xor_address if name.startswith("XOR-") else ref_unpack_address
    for name in BY_NAME
    if name.endswith("ADDRESS") or name in ("ALTERNATE-SERVER", "RESPONSE-ORIGIN")
}


def outcome(call: Any, *args: Any) -> Any:
    """What a call gives: its result, or its exception's type and text."""
    try:
        return call(*args)
    except (ValueError, OSError, struct.error) as exc:
        return type(exc), str(exc)


# addresses

HOSTS = [
    "192.0.2.1", "0.0.0.0", "255.255.255.255", "127.0.0.1", "10.1.2.3",
    "2001:db8::1", "::1", "::", "::ffff:1.2.3.4", "fe80::1:2",
    "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", " 1.2.3.4", "1.2.3.4 ", "", "a.b.c.d",
    "1.2.3.4\x00", "\u0661.2.3.4", "0x1.2.3.4", "1..2.3",
]  # fmt: skip


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("port", [0, 3478, 65535])
def test_address_packing_matches_ipaddress(host: str, port: int) -> None:
    assert outcome(attrs.pack_address, (host, port)) == outcome(ref_pack_address, (host, port))
    fast = outcome(attrs.pack_xor_address, (host, port), TID)
    assert fast == outcome(ref_pack_xor_address, (host, port), TID)
    if isinstance(fast, bytes):
        assert attrs.unpack_xor_address(fast, TID) == ref_unpack_xor_address(fast, TID)
        plain = attrs.pack_address((host, port))
        assert attrs.unpack_address(plain) == ref_unpack_address(plain)


@RELAXED
@given(st.binary(max_size=24))
def test_address_unpacking_matches_ipaddress(data: bytes) -> None:
    assert outcome(attrs.unpack_address, data) == outcome(ref_unpack_address, data)
    assert outcome(attrs.unpack_xor_address, data, TID) == outcome(
        ref_unpack_xor_address, data, TID
    )


@RELAXED
@given(st.ip_addresses(), st.integers(0, 65535))
def test_any_address_round_trips_like_ipaddress(ip: Any, port: int) -> None:
    value = (str(ip), port)
    wire = attrs.pack_xor_address(value, TID)
    assert wire == ref_pack_xor_address(value, TID)
    assert attrs.unpack_xor_address(wire, TID) == ref_unpack_xor_address(wire, TID) == value


@pytest.mark.parametrize("host", HOSTS)
def test_cluster_parses_and_classifies_peers_as_before(host: str) -> None:
    try:
        reference: Any = ipaddress.ip_address(host)
    except ValueError:
        reference = None
    assert cluster._parse_ip(host) == reference
    if reference is not None:
        special = [
            n for n in cluster.SPECIAL_NETWORKS if n.version == reference.version and reference in n
        ]
        assert cluster.special_network(reference) == (special[0] if special else None)


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "0.255.255.255", "1.0.0.0", "126.255.255.255", "127.0.0.0", "127.255.255.255",
     "128.0.0.0", "169.254.169.254", "223.255.255.255", "224.0.0.1", "255.255.255.255",
     "::", "::1", "::2", "fe80::", "febf:ffff::", "fec0::", "ff02::1", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_special_network_edges(host: str) -> None:
    addr = ipaddress.ip_address(host)
    expected = next(
        (n for n in cluster.SPECIAL_NETWORKS if n.version == addr.version and addr in n), None
    )
    assert cluster.special_network(addr) == expected


# messages


def answers() -> list[tuple[Message, bytes | None, bool]]:
    """The answers of one call setup, as stunnerd builds them, and other shapes."""
    challenge = Message(Method.ALLOCATE, Class.ERROR, TID)
    challenge.attributes.update(
        {"ERROR-CODE": (401, "Unauthorized"), "REALM": "stunner.l7mp.io", "NONCE": b"n" * 16}
    )
    allocated = Message(Method.ALLOCATE, Class.SUCCESS, TID)
    allocated.attributes.update(
        {
            "XOR-RELAYED-ADDRESS": ("127.0.0.1", 50001),
            "LIFETIME": 600,
            "XOR-MAPPED-ADDRESS": ("192.0.2.10", 40000),
        }
    )
    unknown = Message(Method.BINDING, Class.ERROR, TID)
    unknown.attributes.update({"ERROR-CODE": (420, "Unknown Attribute")})
    unknown.attributes["UNKNOWN-ATTRIBUTES"] = [0x0031, 0x0032, 0x0033]
    peers = Message(Method.CREATE_PERMISSION, Class.REQUEST, TID)
    peers.attributes["XOR-PEER-ADDRESS"] = [("10.0.0.1", 1), ("2001:db8::2", 2), ("10.0.0.3", 3)]
    peers.attributes.update({"USERNAME": "ü" * 5, "REALM": "r", "NONCE": b"abc"})
    empty = Message(Method.CHANNEL_BIND, Class.SUCCESS, TID)
    return [
        (challenge, None, False),
        (challenge, None, True),
        (allocated, KEY, False),
        (allocated, KEY, True),
        (unknown, None, True),
        (peers, b"other key", True),
        (empty, KEY, False),
        (empty, None, False),
    ]


@pytest.mark.parametrize(("msg", "key", "fingerprint"), answers())
def test_answers_encode_to_the_reference_bytes(
    msg: Message, key: bytes | None, fingerprint: bool
) -> None:
    assert msg.encode(key, fingerprint) == ref_encode(msg, key, fingerprint)


def test_trailers_in_attributes_are_skipped_and_unknown_names_refused() -> None:
    msg = Message(Method.BINDING, Class.SUCCESS, TID)
    msg.attributes.update({"FINGERPRINT": 1, "MESSAGE-INTEGRITY": b"x" * 20, "LIFETIME": 5})
    assert msg.encode(KEY, True) == ref_encode(msg, KEY, True)
    msg.attributes["NO-SUCH-ATTRIBUTE"] = 1
    with pytest.raises(KeyError):
        msg.encode()


@RELAXED
@given(messages(), st.booleans(), st.booleans())
def test_any_message_encodes_to_the_reference_bytes(
    msg: Message, signed: bool, fingerprint: bool
) -> None:
    key = KEY if signed else None
    assert msg.encode(key, fingerprint) == ref_encode(msg, key, fingerprint)


def parsed(data: bytes) -> Any:
    def fast(data: bytes) -> tuple[int, int, bytes, dict[str, Any], list[int], int]:
        m = parse_message(data)
        return (
            m.method,
            m.msg_class,
            m.transaction_id,
            m.attributes,
            m.unknown_required,
            (m.integrity_offset),
        )

    return outcome(fast, data)


@RELAXED
@given(messages(), st.booleans(), st.booleans())
def test_any_message_parses_as_the_reference_does(
    msg: Message, signed: bool, fingerprint: bool
) -> None:
    wire = ref_encode(msg, KEY if signed else None, fingerprint)
    assert parsed(wire) == outcome(ref_parse, wire)


@RELAXED
@given(hostile_messages())
def test_hostile_messages_parse_or_fail_as_the_reference_does(data: bytes) -> None:
    assert parsed(data) == outcome(ref_parse, data)


@pytest.mark.parametrize(("msg", "key", "fingerprint"), answers())
def test_integrity_checks_as_a_fresh_hmac_does(
    msg: Message, key: bytes | None, fingerprint: bool
) -> None:
    wire = ref_encode(msg, key, fingerprint)
    message = parse_message(wire)
    for candidate in (KEY, b"other key", b""):
        expected = key is not None and candidate == key
        assert message.check_integrity(candidate) is expected


def test_hmac_sha1_matches_hmac_new_across_its_key_cache_bound() -> None:
    codec._hmac_bases.clear()
    keys = [i.to_bytes(4, "big") * 4 for i in range(codec._HMAC_KEYS_KEPT + 3)]
    for round_ in range(2):
        for key in keys:
            data = key + bytes([round_]) * 50
            assert codec.hmac_sha1(key, data) == hmac.new(key, data, hashlib.sha1).digest()
        assert len(codec._hmac_bases) <= codec._HMAC_KEYS_KEPT
    long_key = b"x" * 100  # longer than a SHA-1 block: hashed first, as HMAC says
    assert codec.hmac_sha1(long_key, b"m") == hmac.new(long_key, b"m", hashlib.sha1).digest()


# nonces


def ref_nonce_mac(secret: bytes, stamp: str) -> str:
    return hmac.new(secret, stamp.encode(), hashlib.sha256).hexdigest()[:8]


def ref_nonce_valid(secret: bytes, nonce: bytes, lifetime: float) -> bool:
    try:
        text = nonce.decode()
        stamp, mac = text[:8], text[8:]
        issued = int(stamp, 16)
    except ValueError:
        return False
    if not hmac.compare_digest(mac.encode(), ref_nonce_mac(secret, stamp).encode()):
        return False
    return 0 <= time.time() - issued < lifetime


def test_nonces_are_issued_and_checked_as_before() -> None:
    auth = RequestAuth(PlaintextAuth("r", "u", "p"))
    secret = auth._nonce_secret
    nonce = auth.make_nonce()
    assert nonce == (nonce[:8].decode() + ref_nonce_mac(secret, nonce[:8].decode())).encode()
    now = int(time.time())
    candidates = [nonce, b"", b"\xff" * 16, b"zzzzzzzz12345678", nonce[:15], nonce + b"0"]
    for age in (0, 1, 59, 3599, 3600, 7200, -5):
        stamp = f"{now - age:08x}"
        candidates += [(stamp + ref_nonce_mac(secret, stamp)).encode(), (stamp + "0" * 8).encode()]
    stamp = " 0x" + f"{now:x}"[-5:]  # int() takes this form too: the MAC decides
    candidates.append((stamp + ref_nonce_mac(secret, stamp)).encode())
    for candidate in candidates * 2:  # the second time from the MAC cache
        for lifetime in (1.0, 3600.0):
            assert auth.nonce_valid(candidate, lifetime) == ref_nonce_valid(
                secret, candidate, lifetime
            ), candidate


def test_nonce_mac_cache_stays_bounded_and_right() -> None:
    auth = RequestAuth(PlaintextAuth("r", "u", "p"))
    for i in range(3 * turn_auth.NONCE_MACS_KEPT):
        stamp = f"{i:08x}"
        assert auth._nonce_mac(stamp) == ref_nonce_mac(auth._nonce_secret, stamp)
        assert len(auth._macs) <= turn_auth.NONCE_MACS_KEPT


# the sweeper's expiry check


class _Client:
    addr = ("192.0.2.1", 1)
    key = addr


def ref_expire(alloc: Allocation, now: float) -> None:
    for ip in [ip for ip, t in alloc.permissions.items() if t <= now]:
        alloc.revoke(ip)
    for channel in [c for c, t in alloc.channel_expiry.items() if t <= now]:
        alloc.unbind_channel(channel)


def state(alloc: Allocation) -> Any:
    return (
        dict(alloc.permissions),
        dict(alloc.channels),
        dict(alloc.channel_expiry),
        dict(alloc.routes),
        dict(alloc.peer_routes),
    )


OPS = st.lists(
    st.tuples(
        st.sampled_from(["permit", "bind", "revoke", "unbind", "expire"]),
        st.integers(0, 3),  # which peer / channel
        st.integers(0, 30),  # time step
    ),
    max_size=40,
)


@RELAXED
@given(OPS)
def test_expire_with_its_deadline_drops_what_a_full_scan_drops(ops: list[Any]) -> None:
    fast, slow = Allocation(_Client(), "u"), Allocation(_Client(), "u")  # type: ignore[arg-type]
    now = 0.0
    for op, which, step in ops:
        now += step
        ip, peer, channel = f"10.0.0.{which}", (f"10.0.0.{which}", 1000 + which), 0x4000 + which
        for alloc in (fast, slow):
            if op == "permit":
                alloc.permit(ip, now + 10 + step)
            elif op == "bind":
                alloc.bind_channel(channel, peer, now + 20 - step)
            elif op == "revoke":
                alloc.revoke(ip)
            elif op == "unbind":
                alloc.unbind_channel(channel)
        fast.expire(now)
        ref_expire(slow, now)
        assert state(fast) == state(slow)
        soonest = min([*fast.permissions.values(), *fast.channel_expiry.values()], default=None)
        assert soonest is None or fast.next_expiry <= soonest


# logging


@pytest.mark.parametrize("created", [0.0, 1.0005, 1700000000.999, 1700000000.9999, 1700000001.0])
def test_log_lines_read_as_logging_formatter_writes_them(created: float) -> None:
    fast, plain = logs.Formatter(logs.FORMAT), logging.Formatter(logs.FORMAT)
    for when in (created, created + 0.25, created - 0.5, created):
        record = logging.LogRecord("stunner.turn", logging.INFO, "", 0, "%s: x %d", ("a", 1), None)
        record.created, record.msecs = when, (when - int(when)) * 1000
        assert fast.format(record) == plain.format(record)
    record.created = created
    assert fast.formatTime(record, "%H") == plain.formatTime(record, "%H")


# relay sockets


def test_relay_sockets_are_created_non_blocking() -> None:
    sock = RelayPortAllocator("127.0.0.1", 0, 0).bind()
    assert sock is not None
    try:
        assert sock.getblocking() is False
        assert fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert sock.type == socket.SOCK_DGRAM
    finally:
        sock.close()


@RELAXED
@given(st.text(alphabet="0123456789.", max_size=16) | st.ip_addresses(v=4).map(str))
def test_an_ipv4_text_that_parses_is_canonical(text: str) -> None:
    """Admission uses the peer's text as ``str(addr)`` when it parsed as IPv4."""
    addr = cluster._parse_ip(text)
    if isinstance(addr, ipaddress.IPv4Address):
        assert str(addr) == text


@pytest.mark.parametrize("host", HOSTS)
def test_remembered_peer_classification_is_the_computed_one(host: str) -> None:
    addr = cluster._parse_ip(host)
    expected = None if addr is None else (addr, cluster.special_network(addr))
    assert cluster._classified(host) == expected
    assert cluster._classified(host) == expected  # the second time from the table


def test_peer_classification_table_stays_bounded() -> None:
    for i in range(cluster._CLASSIFIED_KEPT + 10):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        assert cluster._classified(ip) == (ipaddress.IPv4Address(ip), None)
        assert len(cluster._classified_ips) <= cluster._CLASSIFIED_KEPT
    assert cluster._classified("127.0.0.1") == (
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.ip_network("127.0.0.0/8"),
    )
