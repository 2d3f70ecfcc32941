"""The amplification guard over real UDP: a browser's first Allocate is answered on the first
try, and a spoofed flood from many loopback addresses gets exactly what the budgets allow.

Sources are sockets bound on 127.202.x.y (loopback only); the answers are counted where they
land, and the listener's counters must agree: every request is rx, each is either answered
(tx) or withheld (one amplification drop), never both.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from stunner.stats import Drop, ListenerStats
from stunner.stun import Class, Message, Method, parse_message
from stunner.turn.limits import AmplificationGuard
from stunner.turn.refusals import BURST
from testkit.wait import wait_for
from tests.integration.conftest import Gateway

ALLOCATE = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
ANSWER = 80  # the 401 to it: ERROR-CODE, REALM stunner.l7mp.io, a 16-byte NONCE
EXTRA = ANSWER - 28  # bytes each answer costs beyond its request


@pytest.fixture
def sources() -> Iterator[list[socket.socket]]:
    """UDP sockets on 60 distinct loopback addresses, closed after the test."""
    socks = []
    try:
        for i in range(60):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((f"127.202.{i // 250}.{i % 250 + 1}", 0))
            sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def answers(sock: socket.socket) -> list[bytes]:
    """What has arrived on ``sock`` so far (loopback delivers before the sender counts tx)."""
    got = []
    while True:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return got


def udp_stats(gateway: Gateway) -> ListenerStats:
    return gateway.stunner.stats[gateway.listener_name("UDP")]


def small_guard(gateway: Gateway, **budgets: int) -> None:
    """Budgets small enough to exhaust with a few datagrams; an hour-long window, so that a
    slow machine cannot start a new one mid-test."""
    guard = AmplificationGuard(window=3600.0, **budgets)
    gateway.stunner.listeners[gateway.listener_name("UDP")].server.guard = guard


async def test_a_browsers_first_allocate_is_answered_on_the_first_try(
    gateway: Gateway, sources: list[socket.socket]
) -> None:
    sock = sources[0]
    request = ALLOCATE.encode()
    assert len(request) == 28  # what Chromium sends first
    sock.sendto(request, ("127.0.0.1", gateway.ports["UDP"]))
    stats = udp_stats(gateway)
    await wait_for(lambda: stats.tx_packets == 1, what="the 401")
    (got,) = answers(sock)
    answer = parse_message(got)
    assert answer.attributes["ERROR-CODE"][0] == 401 and len(got) == ANSWER
    assert (stats.rx_packets, stats.tx_packets, stats.tx_bytes) == (1, 1, ANSWER)
    assert stats.dropped_packets[Drop.AMPLIFICATION] == 0


async def test_a_spoofed_flood_gets_exactly_the_global_budget(
    gateway: Gateway, sources: list[socket.socket]
) -> None:
    """60 addresses, one Allocate each; the global budget pays for 20 answers (and 51 B)."""
    small_guard(gateway, global_budget=20 * EXTRA + 51)
    target = ("127.0.0.1", gateway.ports["UDP"])
    for sock in sources:
        sock.sendto(ALLOCATE.encode(), target)
    stats = udp_stats(gateway)
    await wait_for(lambda: stats.rx_packets == 60, what="all 60 requests read")
    got = [answers(sock) for sock in sources]
    assert sum(map(len, got)) == 20
    assert all(len(g) <= 1 for g in got)
    assert (stats.tx_packets, stats.tx_bytes) == (20, 20 * ANSWER)
    amplification = Drop.AMPLIFICATION
    assert (stats.dropped_packets[amplification], stats.dropped_bytes[amplification]) == (
        40,
        40 * 28,
    )


def withheld_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "stunner.turn" and r.levelno == logging.INFO and "withheld" in r.getMessage()
    ]


async def test_one_source_past_its_budget_is_answered_only_with_its_own_bytes(
    gateway: Gateway, sources: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """20 Allocates from one address with a 200-B source budget: answers may total
    20 * 28 + 200 = 760 B, so exactly 9 of the 80-B answers go out; the 11 withheld leave
    ``BURST`` rate-limited INFO lines naming the source."""
    caplog.set_level(logging.INFO, logger="stunner.turn")
    small_guard(gateway, source_budget=200)
    sock, target = sources[0], ("127.0.0.1", gateway.ports["UDP"])
    for _ in range(20):
        sock.sendto(ALLOCATE.encode(), target)
    stats = udp_stats(gateway)
    await wait_for(lambda: stats.rx_packets == 20, what="all 20 requests read")
    assert len(answers(sock)) == 9 == stats.tx_packets
    assert stats.dropped_packets[Drop.AMPLIFICATION] == 11
    port = sock.getsockname()[1]
    assert (
        withheld_lines(caplog)
        == [
            f"{gateway.listener_name('UDP')}: answer to ALLOCATE from 127.202.0.1:{port} withheld: "
            "over the amplification budget"
        ]
        * BURST
    )
    (other,) = [answers(s) for s in sources[1:2]]
    sources[1].sendto(ALLOCATE.encode(), target)  # another address: its own budget
    await wait_for(lambda: stats.tx_packets == 10, what="the other source's 401")
    assert len(answers(sources[1])) == 1 and other == []
