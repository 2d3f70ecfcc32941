"""Waiting for a condition: poll until it holds, fail with the last value seen at a deadline.

Tests wait for facts (a counter reached, a server answering), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError, AssertionError):
    """A polled condition did not hold in time; carries the last value seen. A TimeoutError,
    and an AssertionError so that a test reports it as a failed expectation."""

    def __init__(self, what: str, last: object) -> None:
        super().__init__(f"{what}: gave up waiting, last value {last!r}")
        self.last = last


class GiveUp(Exception):
    """Raised by a fetch to end the wait at once, even when `retry_on` would catch it: e.g. the
    process we wait for has exited."""


def _truthy(value: object) -> bool:
    return bool(value)


class _Poller:
    """One wait: its deadline, what counts as "not yet", and the last value for the error."""

    def __init__(
        self,
        what: str,
        timeout: float,
        retry_on: tuple[type[Exception], ...],
        stop: Callable[[], bool] | None,
    ) -> None:
        self.what = what
        self.deadline = time.monotonic() + timeout
        self.retry_on = retry_on
        self.stop = stop
        self.last: object = None

    def attempt(self, fetch: Callable[[], T], until: Callable[[T], bool]) -> list[T]:
        """[value] once it holds, [] for "not yet"; DeadlineExceeded when time is up or `stop`
        says waiting longer cannot help."""
        try:
            value = fetch()
        except GiveUp:
            raise
        except self.retry_on as exc:  # e.g. a server that is not up yet
            self.last = exc
        else:
            self.last = value
            if until(value):
                return [value]
        if time.monotonic() >= self.deadline or (self.stop is not None and self.stop()):
            raise DeadlineExceeded(self.what, self.last)
        return []


def poll(
    fetch: Callable[[], T],
    until: Callable[[T], bool] = _truthy,
    *,
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
    retry_on: tuple[type[Exception], ...] = (),
    stop: Callable[[], bool] | None = None,
) -> T:
    """Call `fetch` until `until(value)` holds and return that value.

    Exceptions in `retry_on` count as "not yet"; any other, and `GiveUp` always, propagates at
    once. `stop` ends the wait early (e.g. the process we wait for has exited): waiting longer
    cannot help.
    """
    poller = _Poller(what, timeout, retry_on, stop)
    while not (done := poller.attempt(fetch, until)):
        time.sleep(interval)
    return done[0]


async def poll_async(
    fetch: Callable[[], T],
    until: Callable[[T], bool] = _truthy,
    *,
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.01,
    retry_on: tuple[type[Exception], ...] = (),
    stop: Callable[[], bool] | None = None,
) -> T:
    """`poll` on an event loop: sleeps with asyncio, so the servers under test keep running.
    ``interval=0`` polls every loop iteration."""
    poller = _Poller(what, timeout, retry_on, stop)
    while not (done := poller.attempt(fetch, until)):
        await asyncio.sleep(interval)
    return done[0]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> None:
    """Block until `predicate()` is true; DeadlineExceeded (a TimeoutError) after `timeout`."""
    poll(predicate, timeout=timeout, interval=interval, what=what or "condition")


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> None:
    """`wait_until` on an event loop."""
    await poll_async(predicate, timeout=timeout, interval=interval, what=what or "condition")


async def settle(
    read: Callable[[], Any], expected: Any, timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Wait until ``read()`` equals ``expected``; if it never does, fail showing both."""
    with contextlib.suppress(TimeoutError):
        await wait_for(lambda: read() == expected, timeout, interval)
    assert read() == expected
