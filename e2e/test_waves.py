"""Clients come and go in waves: the connection and allocation gauges follow (max_over_time
during each wave equals its size) and return to 0 after it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import truth
from e2e.checks import Checker, Expect, Recorder
from e2e.clients import Allocation, Tally, close_all, open_many
from e2e.contract import Key
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

WAVES = (2, 4, 1)
SIZE = 64


async def test_gauges_follow_waves(target: Target, recorder: Recorder) -> None:
    check = Checker(target.scope, f"waves of {'/'.join(map(str, WAVES))} clients", recorder)
    since = await asyncio.to_thread(check.snapshot)
    protos = list(target.listeners)
    tallies = {p: Tally(target.listeners[p].name, target.listeners[p].protocol) for p in protos}
    for wave, size in enumerate(WAVES, 1):
        start = time.time()
        groups = await asyncio.gather(
            *(open_many(target.listeners[p], target.username, target.password, size)
              for p in protos)
        )  # fmt: skip
        allocs: list[Allocation] = [a for g in groups for a in g]
        try:
            await asyncio.gather(*(a.echo_many(target.peer, 1, SIZE, wave) for a in allocs))
            await asyncio.to_thread(check.fresh)  # a scrape saw the whole wave
        finally:
            await close_all(allocs)
        left = time.time()
        for p, group in zip(protos, groups, strict=True):
            for a in group:
                tallies[p].add(a)
        zero: dict[Key, Expect] = {}
        peak: dict[Key, Expect] = {}
        for t in tallies.values():
            zero |= truth.gauges(t.name, 0, f"wave {wave} left", t.protocol)
            peak |= truth.gauges(t.name, size, f"wave {wave}: {size} clients", t.protocol)
        await asyncio.to_thread(check.expect_absolute, zero, after=left)
        await asyncio.to_thread(check.expect_max, start, time.time(), peak, f"wave {wave}")
    expected: dict[Key, Expect] = {}
    for t in tallies.values():
        expected |= truth.counters(t)
    await asyncio.to_thread(check.expect_deltas, since, expected)
    check.assert_all()
