"""The UDP amplification guard: first answers at once, bytes bounded per source and in all.

A TurnServer over a fake socket, with a fake clock; every figure is exact because the rule is:
per window, answer bytes to a source <= its request bytes + ``source_budget``, and the bytes
beyond the sources' own, all sources together, <= ``global_budget``.
"""

from __future__ import annotations

from typing import Any

from stunner.auth import PlaintextAuth
from stunner.config import LimitsConfig
from stunner.stats import Drop, ListenerStats
from stunner.stun import Class, Message, Method, parse_message
from stunner.turn import DatagramClient, StreamClient, TurnServer
from stunner.turn.limits import AmplificationGuard

REALM = "stunner.l7mp.io"


def browser_allocate() -> bytes:
    """Chromium's first Allocate: REQUESTED-TRANSPORT only, no credentials yet (28 bytes)."""
    return Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """A UDP socket that records what it sent, and to whom."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def make_server(guard: AmplificationGuard, enabled: bool = True) -> TurnServer:
    return TurnServer(
        "udp",
        ListenerStats(),
        PlaintextAuth(REALM, "user1", "pass1"),
        lambda ip: True,
        "127.0.0.1",
        44000,
        44999,
        limits=LimitsConfig(udp_amplification_guard=enabled),
        guard=guard,
    )


def withheld(server: TurnServer) -> tuple[int, int]:
    stats = server.stats
    return stats.dropped_packets[Drop.AMPLIFICATION], stats.dropped_bytes[Drop.AMPLIFICATION]


def test_a_browsers_first_allocate_gets_its_401_on_the_first_try() -> None:
    server = make_server(AmplificationGuard(Clock()))  # the default budgets
    wire = Wire()
    request = browser_allocate()
    assert len(request) == 28
    server.handle_stun(request, DatagramClient(wire, ("192.0.2.1", 5000)))  # type: ignore[arg-type]
    assert len(wire.sent) == 1
    answer = parse_message(wire.sent[0][0])
    assert answer.attributes["ERROR-CODE"][0] == 401
    assert "NONCE" in answer.attributes and answer.attributes["REALM"] == REALM
    assert len(wire.sent[0][0]) == 80
    assert (server.stats.tx_packets, server.stats.tx_bytes) == (1, 80)
    assert withheld(server) == (0, 0)


def test_one_source_gets_its_own_bytes_plus_the_source_budget() -> None:
    """20 first Allocates (28 B each, 80-B answers) from one address, budget 200 B: the
    answers may total 20 * 28 + 200 = 760 B, so exactly 9 go out, and 11 are withheld."""
    clock = Clock()
    server = make_server(AmplificationGuard(clock, source_budget=200))
    wire = Wire()
    client = DatagramClient(wire, ("192.0.2.1", 5000))  # type: ignore[arg-type]
    answered = []
    for _ in range(20):
        before = len(wire.sent)
        server.handle_stun(browser_allocate(), client)
        answered.append(len(wire.sent) - before)
    # The first three go out at once; past the budget, every answer waits for the source to
    # have sent its bytes, as a retransmitting client does.
    assert answered[:4] == [1, 1, 1, 0]
    assert sum(answered) == 9
    assert (server.stats.tx_packets, server.stats.tx_bytes) == (9, 9 * 80)
    assert withheld(server) == (11, 11 * 28)
    assert server.stats.tx_bytes <= 20 * 28 + 200
    # Another address has its own budget; and the next window starts afresh.
    other = Wire()
    server.handle_stun(browser_allocate(), DatagramClient(other, ("192.0.2.2", 5000)))  # type: ignore[arg-type]
    assert len(other.sent) == 1
    clock.now += AmplificationGuard.WINDOW
    server.handle_stun(browser_allocate(), client)
    assert len(wire.sent) == 10


def test_a_spoofed_flood_from_many_sources_stays_within_the_global_budget() -> None:
    """1000 addresses, one 28-B Allocate each: each answer costs 52 B beyond its request, the
    global budget is 100 of them plus 51 B, so exactly 100 are answered."""
    clock = Clock()
    server = make_server(AmplificationGuard(clock, global_budget=100 * 52 + 51))
    wire = Wire()
    for i in range(1000):
        client = DatagramClient(wire, (f"10.1.{i // 256}.{i % 256}", 4000))  # type: ignore[arg-type]
        server.handle_stun(browser_allocate(), client)
    assert len(wire.sent) == 100
    assert len({addr for _, addr in wire.sent}) == 100
    assert server.stats.tx_bytes == 100 * 80 <= 1000 * 28 + 100 * 52 + 51
    assert withheld(server) == (900, 900 * 28)
    # A source that pays its own way is still answered: a Binding response (32 B) to a
    # request carrying 40 B of attributes costs no budget.
    big = Message(Method.BINDING, Class.REQUEST, attributes={"SOFTWARE": "x" * 36}).encode()
    paying = DatagramClient(wire, ("10.9.9.9", 4000))  # type: ignore[arg-type]
    server.handle_stun(big, paying)
    assert len(wire.sent) == 101
    clock.now += AmplificationGuard.WINDOW  # a new window, a new global budget
    server.handle_stun(browser_allocate(), DatagramClient(wire, ("10.1.0.0", 4000)))  # type: ignore[arg-type]
    assert len(wire.sent) == 102


def test_the_source_table_is_bounded() -> None:
    guard = AmplificationGuard(Clock(), max_sources=10)
    assert all(guard.allow(f"10.0.0.{i}", 28, 80) for i in range(10))
    assert not guard.allow("10.0.0.99", 28, 80)  # no room: not answered, not remembered
    assert len(guard._balance) == 10


def test_stream_clients_and_a_disabled_guard_are_answered_at_once() -> None:
    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 0  # the client reads everything at once

    server = make_server(AmplificationGuard(Clock(), source_budget=0, global_budget=0))
    stream = Transport()
    for _ in range(5):
        server.handle_stun(browser_allocate(), StreamClient(stream, ("192.0.2.1", 5000)))  # type: ignore[arg-type]
    assert len(stream.written) == 5
    off = make_server(AmplificationGuard(Clock(), source_budget=0, global_budget=0), False)
    wire = Wire()
    for _ in range(5):
        off.handle_stun(browser_allocate(), DatagramClient(wire, ("192.0.2.1", 5000)))  # type: ignore[arg-type]
    assert len(wire.sent) == 5 and withheld(off) == (0, 0)
