"""Credential handlers and peer admission: both ways, edges included."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket

import pytest

from stunner.auth import LongTermAuth, PlaintextAuth, long_term_key, rest_password, rest_username
from stunner.cluster import Admission, Cluster
from stunner.config import ClusterConfig


def test_long_term_key_is_md5_of_user_realm_password() -> None:
    assert long_term_key("user", "realm", "pass") == hashlib.md5(b"user:realm:pass").digest()


def test_plaintext_accepts_only_its_user() -> None:
    auth = PlaintextAuth("realm", "user1", "pass1")
    assert auth.key_for("user1") == long_term_key("user1", "realm", "pass1")
    assert auth.key_for("user2") is None
    assert "pass1" not in repr(auth)


def test_turn_rest_password_matches_the_scheme() -> None:
    username = rest_username(1700000000, "alice")
    assert username == "1700000000:alice"
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1700000000:alice", hashlib.sha1).digest()
    ).decode()
    assert rest_password("s3cret", username) == expected


@pytest.mark.parametrize(
    ("username", "accepted"),
    [
        ("2000:alice", True),
        ("2000", True),
        ("1000:alice", True),  # expires exactly now: still valid this second
        ("999:alice", False),  # expired
        ("alice", False),
        ("abc:alice", False),
        ("", False),
        ("-5:alice", False),
    ],
)
def test_longterm_checks_expiry(username: str, accepted: bool) -> None:
    auth = LongTermAuth("realm", "s3cret", clock=lambda: 1000.0)
    key = auth.key_for(username)
    if accepted:
        assert key == long_term_key(username, "realm", rest_password("s3cret", username))
    else:
        assert key is None
    assert "s3cret" not in repr(auth)


def static(*endpoints: str) -> Cluster:
    return Cluster(ClusterConfig(name="c", type="STATIC", endpoints=endpoints))


@pytest.mark.parametrize(
    ("endpoints", "ip", "admitted"),
    [
        (("10.0.0.1",), "10.0.0.1", True),
        (("10.0.0.1",), "10.0.0.2", False),
        (("10.244.0.0/16",), "10.244.0.0", True),
        (("10.244.0.0/16",), "10.244.255.255", True),
        (("10.244.0.0/16",), "10.245.0.0", False),
        (("10.244.0.0/16",), "10.243.255.255", False),
        (("10.0.0.1/32",), "10.0.0.1", True),
        (("0.0.0.0/0",), "203.0.113.9", True),
        (("10.0.0.0/8",), "not-an-ip", False),
        (("10.0.0.0/8",), "::1", False),
        (("fd00::/8",), "fd00::1", True),
    ],
)
def test_static_cluster_edges(endpoints: tuple[str, ...], ip: str, admitted: bool) -> None:
    assert static(*endpoints).contains(ip) is admitted


def test_admission_follows_routes_only() -> None:
    clusters = {"a": static("10.0.0.1"), "b": static("10.0.0.2")}
    admission = Admission(clusters, ["a", "missing"])
    assert admission.admits("10.0.0.1")
    assert not admission.admits("10.0.0.2")
    clusters["missing"] = static("10.0.0.3")  # a cluster arriving later is picked up
    assert admission.admits("10.0.0.3")


async def test_strict_dns_resolves_and_keeps_last_good_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(ClusterConfig(name="d", type="STRICT_DNS", endpoints=("localhost",)))
    assert not cluster.contains("127.0.0.1")
    await cluster.resolve_once()
    assert cluster.contains("127.0.0.1")

    async def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror("name does not resolve")

    # The name stops resolving: the last resolved set stays.
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fail)
    await cluster.resolve_once()
    assert cluster.contains("127.0.0.1")


@pytest.mark.parametrize(
    ("endpoints", "ip", "admitted"),
    [
        (("0.0.0.0/0",), "203.0.113.9", True),
        (("0.0.0.0/0",), "127.0.0.1", False),  # a catch-all does not name loopback
        (("0.0.0.0/0",), "169.254.169.254", False),  # nor cloud metadata
        (("0.0.0.0/0",), "224.0.0.251", False),  # nor multicast
        (("0.0.0.0/0",), "0.0.0.0", False),
        (("0.0.0.0/0",), "255.255.255.255", False),
        (("127.0.0.1",), "127.0.0.1", True),  # named exactly
        (("127.0.0.0/8",), "127.0.0.5", True),  # a CIDR inside the special range names it
        (("127.0.0.0/7",), "127.0.0.5", False),  # a wider one does not
        (("169.254.169.254",), "169.254.169.254", True),
        (("::/0",), "::1", False),
        (("::/0",), "fe80::1", False),
        (("::1",), "::1", True),
        (("10.0.0.0/8",), "10.1.2.3", True),
        (("10.0.0.0/8",), "10.0.0.7", False),  # the relay's own address
        (("10.0.0.7",), "10.0.0.7", True),  # ... unless named exactly
    ],
)
def test_special_and_own_addresses_need_explicit_naming(
    endpoints: tuple[str, ...], ip: str, admitted: bool
) -> None:
    admission = Admission({"c": static(*endpoints)}, ["c"], own_addresses={"10.0.0.7"})
    assert admission.admits(ip) is admitted
