"""RateLimitedLog: per-source bursts, a global cap, and the count of what was suppressed."""

from __future__ import annotations

import logging

import pytest

from stunner.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(caplog: pytest.LogCaptureFixture, **kwargs: int) -> tuple[RateLimitedLog, Clock]:
    caplog.set_level(logging.INFO, logger="stunner.test.ratelog")
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("stunner.test.ratelog"), clock=clock, **kwargs)
    return log, clock


def test_burst_per_source_then_suppressed_count_on_next_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log, clock = make(caplog, burst=2, global_burst=100)
    written = [log.log("auth", "10.0.0.1", "auth failure from %s", "10.0.0.1") for _ in range(5)]
    assert written == [True, True, False, False, False]
    assert log.log("auth", "10.0.0.2", "auth failure from %s", "10.0.0.2")  # another source
    clock.now += 60.0
    assert log.log("auth", "10.0.0.1", "auth failure from %s", "10.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "auth failure from 10.0.0.1",
        "auth failure from 10.0.0.1",
        "auth failure from 10.0.0.2",
        "auth failure from 10.0.0.1 (3 similar lines suppressed)",
    ]
    assert log.suppressed_total == 3


def test_global_cap_bounds_a_flood_from_many_sources(caplog: pytest.LogCaptureFixture) -> None:
    log, _ = make(caplog, burst=5, global_burst=10)
    written = sum(log.log("peer", f"10.0.{i // 256}.{i % 256}", "refused") for i in range(1000))
    assert written == 10
    assert len(caplog.records) == 10
    assert log.suppressed_total == 990


def test_key_table_stays_bounded(caplog: pytest.LogCaptureFixture) -> None:
    log, _ = make(caplog, burst=1, global_burst=1_000_000, max_keys=100)
    for i in range(1000):
        log.log("peer", str(i), "refused")
    assert len(log._keys) <= 100


def test_disabled_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stunner.test.ratelog")
    log = RateLimitedLog(logging.getLogger("stunner.test.ratelog"))
    assert not log.log("auth", "x", "line")
    assert log._keys == {}


def test_a_line_may_name_its_own_logger_and_level(caplog: pytest.LogCaptureFixture) -> None:
    """One limiter serves several scopes and levels; they share its global cap, and a line
    whose level is off takes no part of it."""
    caplog.set_level(logging.INFO, logger="stunner.test")
    log = RateLimitedLog(logging.getLogger("stunner.test.ratelog"), global_burst=2)
    other = logging.getLogger("stunner.test.other")
    assert not log.log("noise", "x", "debug line", level=logging.DEBUG)
    assert log._keys == {}
    assert log.log("tls", "x", "tls line", logger=other)
    assert log.log("auth", "x", "auth line")
    assert not log.log("auth", "y", "over the global cap")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("stunner.test.other", "INFO", "tls line"),
        ("stunner.test.ratelog", "INFO", "auth line"),
    ]
