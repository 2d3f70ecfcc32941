"""Every refusal leaves one rate-limited log line: who, from where, and why, never a password.

A TurnServer over a fake socket with a fake clock (tests/unit/test_turn_server.py's client),
so every count is exact: each (event, source) writes refusals.BURST lines per
refusals.INTERVAL, and the next line after a window says how many were suppressed.
"""

from __future__ import annotations

import logging
import re

import pytest

from stunner.auth import LongTermAuth, rest_username
from stunner.stun import Class, Message, Method
from stunner.turn import DeleteReason, StreamClient, TurnServer
from stunner.turn import refusals as limits
from stunner.turn.limits import Quotas
from tests.unit.test_turn_server import Client, code, make_server

PASSWORD = "s3cret-pass"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> TurnServer:
    srv = make_server(46000, 46999, clock=clock)
    yield srv  # type: ignore[misc]
    srv.close()


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name in ("stunner.turn", "stunner.listener") and r.levelno == level
    ]


async def test_a_first_challenge_is_not_a_failure_a_wrong_password_is(
    server: TurnServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stunner")
    client = Client(server, password=PASSWORD)
    first = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
    assert code(await client.send(first)) == 401
    assert [r for r in caplog.records if r.name == "stunner.turn"] == []
    assert code(await client.allocate()) == 401  # user1's password is pass1
    assert code(await Client(server, username="mallory").allocate()) == 401
    assert lines(caplog) == [
        "l: authentication failed: ALLOCATE from 192.0.2.10:40000, user 'user1': wrong password",
        "l: authentication failed: ALLOCATE from 192.0.2.10:40000, user 'mallory': unknown user",
    ]
    assert PASSWORD not in caplog.text and "pass1" not in caplog.text


async def test_expired_and_malformed_rest_credentials_are_failures(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stunner")
    auth = LongTermAuth("stunner.l7mp.io", "secret", clock=lambda: 2_000_000_000.0)
    srv = TurnServer("rest", make_server(1, 1).stats, auth, lambda ip: True, "127.0.0.1", 1, 1)
    expired = rest_username(2_000_000_000 - 30, "alice")
    assert code(await Client(srv, username=expired).allocate()) == 401
    assert code(await Client(srv, username="alice").allocate()) == 401
    assert lines(caplog) == [
        f"rest: authentication failed: ALLOCATE from 192.0.2.10:40000, user '{expired}': "
        "credential expired 30 s ago",
        "rest: authentication failed: ALLOCATE from 192.0.2.10:40000, user 'alice': "
        "not a TURN REST username (<expiry>:<user>)",
    ]


async def test_ten_thousand_wrong_passwords_write_five_lines(
    server: TurnServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stunner")
    client = Client(server, password=PASSWORD)
    for _ in range(10_000):
        server.handle_stun(client.signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17).encode(
            client.key
        ), client.endpoint)  # fmt: skip
    assert len(client.transport.sent) == 10_000  # every one answered 401
    assert len(lines(caplog)) == limits.BURST == 5
    clock.now += limits.INTERVAL
    await client.allocate()
    assert lines(caplog)[-1].endswith("wrong password (9995 similar lines suppressed)")
    assert PASSWORD not in caplog.text


async def test_a_username_cannot_forge_or_flood_a_line(
    server: TurnServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stunner")
    await Client(server, username="x\nFAKE LINE" + "y" * 500).allocate()
    (line,) = lines(caplog)
    assert "\n" not in line and "'x\\nFAKE LINEyyy" in line and "y" * 65 not in line


async def test_refused_peers_and_capacity_at_info_protocol_noise_at_debug(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stunner")
    srv = make_server(46000, 46999, clock=clock, quotas=Quotas(user_quota=1))
    srv.admits = lambda ip: ip == "127.0.0.1"
    try:
        client = Client(srv)
        await client.allocate()
        perm = Method.CREATE_PERMISSION
        assert code(await client.request(perm, XOR_PEER_ADDRESS=[("10.0.0.5", 9)])) == 403
        assert code(await client.allocate(REQUESTED_TRANSPORT=6)) == 437  # has one already
        assert code(await Client(srv, addr=("192.0.2.11", 1)).allocate()) == 486
        srv.accepting = False
        assert code(await Client(srv, addr=("192.0.2.12", 1)).allocate()) == 508
    finally:
        srv.close()
    info = [line for line in lines(caplog) if "refused" in line]
    assert info == [
        "l: CREATE_PERMISSION from 192.0.2.10:40000, user 'user1', refused 403 (Forbidden): "
        "peer 10.0.0.5:9 is in no cluster this listener routes to",
        "l: ALLOCATE from 192.0.2.11:1, user 'user1', refused 486 (Allocation Quota Reached)",
        "l: ALLOCATE from 192.0.2.12:1, user 'user1', refused 508 (Server Shutting Down)",
    ]
    assert lines(caplog, logging.DEBUG) == [
        "l: ALLOCATE from 192.0.2.10:40000, user 'user1', refused 437 (Allocation Mismatch)"
    ]


async def test_every_allocation_end_is_logged_with_its_reason(
    server: TurnServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stunner")
    refreshed = Client(server, addr=("192.0.2.20", 1))
    await refreshed.allocate()
    assert code(await refreshed.request(Method.REFRESH, LIFETIME=0)) == 0
    expiring = Client(server, addr=("192.0.2.21", 1))
    await expiring.allocate()
    clock.now += 3600
    server.sweep(clock.now)

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 0  # the client reads everything at once

    stream = StreamClient(Transport(), ("192.0.2.22", 2))  # type: ignore[arg-type]
    allocate = Client(server).signed(Method.ALLOCATE, REQUESTED_TRANSPORT=17)
    server.handle_stun(allocate.encode(Client(server).key), stream)
    server.connection_closed(stream)
    for i in range(3):
        await Client(server, addr=(f"192.0.2.{30 + i}", 1)).allocate()
    server.close(DeleteReason.SHUTDOWN)
    ends = [re.sub(r"->\d+\)", "->port)", line) for line in lines(caplog) if "deleted" in line]
    assert ends == [
        "l: allocation(192.0.2.20:1->port) deleted: refresh0",
        "l: allocation(192.0.2.21:1->port) deleted: expired",
        "l: allocation(192.0.2.22:2->port) deleted: connection_closed",
        "l: 3 allocation(s) deleted: shutdown",
    ]
