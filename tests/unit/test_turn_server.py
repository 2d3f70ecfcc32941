"""TurnServer handlers over a fake transport: every RFC 8656 answer, byte-level."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stunner.auth import LongTermAuth, PlaintextAuth, long_term_key, rest_password
from stunner.config import LimitsConfig
from stunner.stats import ListenerSample, ListenerStats
from stunner.stun import Class, Message, Method, parse_message
from stunner.telemetry import listener_sample
from stunner.turn import DatagramClient, TurnServer
from stunner.turn.limits import Quotas

CLIENT = ("192.0.2.10", 40000)
ADMITTED = "127.0.0.1"
REALM = "stunner.l7mp.io"


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class Client:
    """Drives a TurnServer the way a TURN client would, one transaction at a time."""

    def __init__(
        self,
        server: TurnServer,
        username: str = "user1",
        password: str = "pass1",
        addr: tuple[str, int] = CLIENT,
    ) -> None:
        self.server = server
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.transport = FakeTransport()
        self.endpoint = DatagramClient(self.transport, addr)  # type: ignore[arg-type]
        self.nonce = server.auth.make_nonce()

    def signed(self, method: Method, **attrs: Any) -> Message:
        msg = Message(method, Class.REQUEST)
        msg.attributes.update({k.replace("_", "-"): v for k, v in attrs.items()})
        msg.attributes.update({"USERNAME": self.username, "REALM": REALM, "NONCE": self.nonce})
        return msg

    async def send(
        self, msg: Message, key: bytes | None = None, fingerprint: bool = False
    ) -> Message:
        before = len(self.transport.sent)
        self.server.handle_stun(msg.encode(key, fingerprint), self.endpoint)
        for _ in range(100):
            if len(self.transport.sent) > before:
                break
            await asyncio.sleep(0.001)
        assert len(self.transport.sent) == before + 1, "expected exactly one response"
        data, addr = self.transport.sent[-1]
        assert addr == self.endpoint.addr
        response = parse_message(data)
        assert response.transaction_id == msg.transaction_id
        return response

    async def request(self, method: Method, **attrs: Any) -> Message:
        return await self.send(self.signed(method, **attrs), self.key)

    async def allocate(self, **attrs: Any) -> Message:
        attrs.setdefault("REQUESTED_TRANSPORT", 17)
        return await self.request(Method.ALLOCATE, **attrs)


def code(msg: Message) -> int:
    return int(msg.attributes["ERROR-CODE"][0]) if msg.msg_class == Class.ERROR else 0


NO_GUARD = LimitsConfig(udp_amplification_guard=False)


def sample(server: TurnServer) -> ListenerSample:
    """What a scrape would read for this server's listener (no TCP/TLS connections here)."""
    return listener_sample(server.stats, server.allocations.values(), 0)


def make_server(low: int, high: int, name: str = "l", **options: Any) -> TurnServer:
    """A server admitting every peer, with user1/pass1, relaying on ports ``low..high``."""
    options.setdefault("limits", NO_GUARD)
    return TurnServer(
        name,
        ListenerStats(),
        PlaintextAuth(REALM, "user1", "pass1"),
        lambda ip: True,
        "127.0.0.1",
        low,
        high,
        **options,
    )


@pytest.fixture
async def server() -> AsyncIterator[TurnServer]:
    srv = TurnServer(
        "udp-listener",
        ListenerStats(),
        PlaintextAuth(REALM, "user1", "pass1"),
        lambda ip: ip == ADMITTED,
        "127.0.0.1",
        40000,
        40999,
        limits=NO_GUARD,
    )
    yield srv
    srv.close()


async def test_binding_reflects_the_client_address(server: TurnServer) -> None:
    client = Client(server)
    response = await client.send(Message(Method.BINDING, Class.REQUEST), fingerprint=True)
    assert response.msg_class == Class.SUCCESS
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert "FINGERPRINT" in response.attributes
    plain = await client.send(Message(Method.BINDING, Class.REQUEST))
    assert "FINGERPRINT" not in plain.attributes


async def test_unauthenticated_allocate_is_challenged(server: TurnServer) -> None:
    client = Client(server)
    request = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
    response = await client.send(request)
    assert code(response) == 401
    assert response.attributes["REALM"] == REALM
    assert server.auth.nonce_valid(response.attributes["NONCE"], server.limits.nonce_lifetime)
    assert "MESSAGE-INTEGRITY" not in response.attributes


async def test_wrong_password_and_unknown_user_get_401(server: TurnServer) -> None:
    assert code(await Client(server, password="nope").allocate()) == 401
    assert code(await Client(server, username="mallory").allocate()) == 401
    assert sample(server).allocations == 0


async def test_stale_nonce_gets_438_with_a_fresh_one(
    server: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(server)
    real_time = __import__("time").time
    monkeypatch.setattr("stunner.turn.auth.time.time", lambda: real_time() - 3600)
    client.nonce = server.auth.make_nonce()
    monkeypatch.undo()
    response = await client.allocate()
    assert code(response) == 438
    assert server.auth.nonce_valid(response.attributes["NONCE"], server.limits.nonce_lifetime)
    client.nonce = b"forged-nonce"
    assert code(await client.allocate()) == 438


async def test_missing_username_with_integrity_is_400(server: TurnServer) -> None:
    client = Client(server)
    msg = client.signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17)
    del msg.attributes["USERNAME"]
    assert code(await client.send(msg, client.key)) == 400


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"REQUESTED_TRANSPORT": None}, 400),
        ({"REQUESTED_TRANSPORT": 6}, 442),
        ({"RESERVATION_TOKEN": b"12345678"}, 508),
        ({"RESERVATION_TOKEN": b"12345678", "EVEN_PORT": 0}, 400),
        ({"REQUESTED_ADDRESS_FAMILY": 0x02}, 440),
        ({"ADDITIONAL_ADDRESS_FAMILY": 0x02}, 440),
    ],
)
async def test_allocate_errors(server: TurnServer, attrs: dict[str, Any], expected: int) -> None:
    client = Client(server)
    msg = client.signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17)
    for name, value in attrs.items():
        name = name.replace("_", "-")
        if value is None:
            del msg.attributes[name]
        else:
            msg.attributes[name] = value
    response = await client.send(msg, client.key)
    assert code(response) == expected
    assert sample(server).allocations == 0
    if expected not in (400, 401, 420, 438):
        assert parse_message(client.transport.sent[-1][0]).check_integrity(client.key)


async def test_unknown_comprehension_required_attribute_gets_420(server: TurnServer) -> None:
    client = Client(server)
    wire = bytearray(client.signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17, LIFETIME=600).encode())
    # Rewrite LIFETIME's type (0x000D) into an unknown comprehension-required one (0x7F0D).
    at = wire.index(b"\x00\x0d\x00\x04")
    wire[at : at + 2] = b"\x7f\x0d"
    client.server.handle_stun(bytes(wire), client.endpoint)
    response = parse_message(client.transport.sent[-1][0])
    assert code(response) == 420
    assert response.attributes["UNKNOWN-ATTRIBUTES"] == [0x7F0D]


async def test_allocate_success_lifetimes_and_retransmission(server: TurnServer) -> None:
    client = Client(server)
    request = client.signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17, LIFETIME=7200)
    response = await client.send(request, client.key)
    assert response.msg_class == Class.SUCCESS
    assert response.check_integrity(client.key)
    assert response.attributes["LIFETIME"] == 3600  # capped at 1 h
    relay_host, relay_port = response.attributes["XOR-RELAYED-ADDRESS"]
    assert relay_host == "127.0.0.1" and 40000 <= relay_port <= 40999
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    first_wire = client.transport.sent[-1][0]
    # Same transaction again: the cached success, byte for byte.
    await client.send(request, client.key)
    assert client.transport.sent[-1][0] == first_wire
    # A new transaction on the same 5-tuple: 437.
    assert code(await client.allocate()) == 437
    stats = sample(server)
    assert (stats.allocations, stats.connections, stats.cluster_connections) == (1, 1, 1)
    assert (stats.connections_total, stats.cluster_connections_total) == (1, 1)


async def test_short_lifetime_is_raised_to_default(server: TurnServer) -> None:
    response = await Client(server).allocate(LIFETIME=30)
    assert response.attributes["LIFETIME"] == 600


@pytest.mark.parametrize(
    ("cap", "requested", "granted"),
    [(3, 600, 3), (3, 0x7FFFFFFF, 3), (900, 7200, 900), (900, 30, 600), (7200, 5000, 5000)],
)
async def test_max_allocation_lifetime_caps_allocate_and_refresh(
    cap: int, requested: int, granted: int
) -> None:
    now = [1000.0]
    limits = LimitsConfig(udp_amplification_guard=False, max_allocation_lifetime=cap)
    srv = make_server(43000, 43999, limits=limits, clock=lambda: now[0])
    try:
        client = Client(srv)
        assert (await client.allocate(LIFETIME=requested)).attributes["LIFETIME"] == granted
        refreshed = await client.request(Method.REFRESH, LIFETIME=requested)
        assert refreshed.attributes["LIFETIME"] == granted
        now[0] += granted - 0.5
        srv.sweep(now[0])
        assert sample(srv).allocations == 1
        now[0] += 0.5  # the cap is reached: the sweeper ends the allocation, gauges follow
        srv.sweep(now[0])
        stats = sample(srv)
        assert (stats.allocations, stats.connections, stats.cluster_connections) == (0, 0, 0)
        assert (stats.connections_total, stats.cluster_connections_total) == (1, 1)
    finally:
        srv.close()


async def test_dont_fragment_sets_df_on_the_relay_socket(server: TurnServer) -> None:
    await Client(server).allocate(DONT_FRAGMENT=True)
    relay = server.allocations[CLIENT].relay
    assert relay is not None
    assert relay.sock.getsockopt(socket.IPPROTO_IP, 10) == 2  # IP_MTU_DISCOVER == IP_PMTUDISC_DO


async def test_even_port(server: TurnServer) -> None:
    response = await Client(server).allocate(EVEN_PORT=0)
    assert response.attributes["XOR-RELAYED-ADDRESS"][1] % 2 == 0


async def test_refresh(server: TurnServer) -> None:
    client = Client(server)
    assert code(await client.request(Method.REFRESH, LIFETIME=600)) == 437
    await client.allocate()
    response = await client.request(Method.REFRESH, LIFETIME=1200)
    assert response.attributes["LIFETIME"] == 1200
    response = await client.request(Method.REFRESH, LIFETIME=0)
    assert response.msg_class == Class.SUCCESS and response.attributes["LIFETIME"] == 0
    stats = sample(server)
    assert (stats.allocations, stats.connections, stats.cluster_connections) == (0, 0, 0)
    assert (stats.connections_total, stats.cluster_connections_total) == (1, 1)
    assert code(await client.request(Method.REFRESH, LIFETIME=600)) == 437


async def test_wrong_credentials_on_someone_elses_allocation() -> None:
    auth = LongTermAuth(REALM, "secret")
    srv = TurnServer(
        "l", ListenerStats(), auth, lambda ip: True, "127.0.0.1", 41000, 41999, limits=NO_GUARD
    )
    try:
        alice = "9999999999:alice"
        bob = "9999999999:bob"
        owner = Client(srv, alice, rest_password("secret", alice))
        await owner.allocate()
        intruder = Client(srv, bob, rest_password("secret", bob))
        intruder.endpoint = owner.endpoint
        intruder.transport = owner.transport
        assert code(await intruder.request(Method.REFRESH, LIFETIME=600)) == 441
    finally:
        srv.close()


async def test_create_permission(server: TurnServer) -> None:
    client = Client(server)
    assert (
        code(await client.request(Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=[(ADMITTED, 9)]))
        == 437
    )
    await client.allocate()
    alloc = server.allocations[CLIENT]
    assert code(await client.request(Method.CREATE_PERMISSION)) == 400
    both = [(ADMITTED, 9), ("10.1.1.1", 9)]
    assert code(await client.request(Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=both)) == 403
    assert alloc.permissions == {}  # all or nothing
    assert (
        code(await client.request(Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=[("::1", 9)])) == 443
    )
    ok = await client.request(Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=[(ADMITTED, 9)])
    assert ok.msg_class == Class.SUCCESS and ok.check_integrity(client.key)
    assert list(alloc.permissions) == [ADMITTED]


async def test_channel_bind_rules(server: TurnServer) -> None:
    client = Client(server)
    await client.allocate()
    alloc = server.allocations[CLIENT]
    peer, other = (ADMITTED, 5000), (ADMITTED, 5001)
    bind = Method.CHANNEL_BIND
    assert code(await client.request(bind, XOR_PEER_ADDRESS=[peer])) == 400
    assert code(await client.request(bind, CHANNEL_NUMBER=0x3FFF, XOR_PEER_ADDRESS=[peer])) == 400
    assert code(await client.request(bind, CHANNEL_NUMBER=0x8000, XOR_PEER_ADDRESS=[peer])) == 400
    assert (
        code(await client.request(bind, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[("10.9.9.9", 1)]))
        == 403
    )
    assert (
        await client.request(bind, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[peer])
    ).msg_class == Class.SUCCESS
    assert alloc.channels == {0x4000: peer} and ADMITTED in alloc.permissions
    # Rebinding the same pair refreshes; a different pairing is refused both ways.
    assert (
        await client.request(bind, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[peer])
    ).msg_class == Class.SUCCESS
    assert code(await client.request(bind, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[other])) == 400
    assert code(await client.request(bind, CHANNEL_NUMBER=0x4001, XOR_PEER_ADDRESS=[peer])) == 400


async def test_rfc5766_channel_numbers_and_signed_errors(server: TurnServer) -> None:
    """coturn's clients bind up to 0x7FFF; errors after authentication carry integrity."""
    client = Client(server)
    await client.allocate()
    bind = Method.CHANNEL_BIND
    ok = await client.request(bind, CHANNEL_NUMBER=0x7FFF, XOR_PEER_ADDRESS=[(ADMITTED, 7)])
    assert ok.msg_class == Class.SUCCESS
    bad = await client.request(bind, CHANNEL_NUMBER=0x8000, XOR_PEER_ADDRESS=[(ADMITTED, 8)])
    assert code(bad) == 400
    assert bad.check_integrity(client.key)


async def test_user_quota_gets_486() -> None:
    srv = make_server(42000, 42999, quotas=Quotas(user_quota=1))
    try:
        assert (await Client(srv, addr=("192.0.2.1", 1)).allocate()).msg_class == Class.SUCCESS
        assert code(await Client(srv, addr=("192.0.2.1", 2)).allocate()) == 486
    finally:
        srv.close()


async def test_exhausted_relay_ports_get_508() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    srv = make_server(port, port)
    try:
        assert code(await Client(srv).allocate()) == 508
    finally:
        srv.close()
        blocker.close()


async def test_unknown_method_gets_400(server: TurnServer) -> None:
    client = Client(server)
    response = await client.send(Message(0x00A, Class.REQUEST), client.key)
    assert code(response) == 400


async def test_expiry_frees_the_relay_socket() -> None:
    now = [1000.0]
    srv = make_server(43000, 43999, clock=lambda: now[0])
    try:
        client = Client(srv)
        response = await client.allocate()
        port = response.attributes["XOR-RELAYED-ADDRESS"][1]
        await client.request(Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=[(ADMITTED, 1)])
        await client.request(
            Method.CHANNEL_BIND, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[(ADMITTED, 2)]
        )
        alloc = srv.allocations[CLIENT]
        now[0] += 300  # permissions (5 min) go, channel (10 min) and allocation stay
        srv.sweep(now[0])
        assert alloc.permissions == {} and alloc.channels == {0x4000: (ADMITTED, 2)}
        now[0] += 300
        srv.sweep(now[0])
        assert srv.allocations == {} and sample(srv).allocations == 0
        await asyncio.sleep(0)  # let the transport close
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # the port is free again
        probe.close()
    finally:
        srv.close()


async def test_malformed_input_never_raises(server: TurnServer) -> None:
    client = Client(server)
    for junk in (b"", b"\x00", b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"x" * 11, b"\xff" * 64):
        server.handle_stun(junk, client.endpoint)
    assert client.transport.sent == []


async def test_limits_per_allocation_and_totals() -> None:
    limits = LimitsConfig(
        udp_amplification_guard=False,
        permissions_per_allocation=2,
        channels_per_allocation=1,
        allocations_per_listener=1,
    )
    srv = make_server(44000, 44999, limits=limits)
    try:
        client = Client(srv)
        await client.allocate()
        perm = Method.CREATE_PERMISSION
        ok = await client.request(perm, XOR_PEER_ADDRESS=[("10.0.0.1", 1), ("10.0.0.2", 1)])
        assert ok.msg_class == Class.SUCCESS
        assert code(await client.request(perm, XOR_PEER_ADDRESS=[("10.0.0.3", 1)])) == 508
        bind = Method.CHANNEL_BIND
        first = await client.request(
            bind, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=[("10.0.0.1", 5)]
        )
        assert first.msg_class == Class.SUCCESS
        assert (
            code(
                await client.request(
                    bind, CHANNEL_NUMBER=0x4001, XOR_PEER_ADDRESS=[("10.0.0.2", 5)]
                )
            )
            == 508
        )
        assert code(await Client(srv, addr=("192.0.2.99", 1)).allocate()) == 508  # per listener
    finally:
        srv.close()


async def test_total_allocations_are_shared_across_servers() -> None:
    quotas = Quotas(total=1)
    servers = [make_server(44000, 44999, name=name, quotas=quotas) for name in ("a", "b")]
    try:
        assert (await Client(servers[0]).allocate()).msg_class == Class.SUCCESS
        assert code(await Client(servers[1]).allocate()) == 508
        servers[0].close()
        assert quotas.count == 0
        assert (await Client(servers[1]).allocate()).msg_class == Class.SUCCESS
    finally:
        for srv in servers:
            srv.close()
