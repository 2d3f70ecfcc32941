"""Relay port selection: inside the range, EVEN-PORT honoured, a full range answered with None."""

from __future__ import annotations

from stunner.turn.relay import RelayPortAllocator
from testkit.ports import free_udp_block


def test_small_range_is_used_up_then_none() -> None:
    base = free_udp_block(6)
    ports = RelayPortAllocator("127.0.0.1", base, base + 5)
    socks = [ports.bind() for _ in range(6)]
    try:
        assert all(s is not None for s in socks)
        bound = sorted(s.getsockname()[1] for s in socks if s is not None)
        assert bound == list(range(base, base + 6))
        assert ports.bind() is None  # full: 508
    finally:
        for s in socks:
            if s is not None:
                s.close()


def test_even_port_in_a_large_range() -> None:
    ports = RelayPortAllocator("127.0.0.1", 40001, 59999)
    socks = [ports.bind(even=True) for _ in range(20)]
    try:
        for s in socks:
            assert s is not None
            port = s.getsockname()[1]
            assert port % 2 == 0 and 40001 <= port <= 59999
    finally:
        for s in socks:
            if s is not None:
                s.close()


def test_empty_range() -> None:
    assert RelayPortAllocator("127.0.0.1", 40001, 40001).bind(even=True) is None
