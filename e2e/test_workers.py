"""`stunnerd --workers 2`: two processes share the listener port (SO_REUSEPORT) and one
/metrics endpoint sums them. Prometheus must see exactly the clients' truth, as with one
process: nothing double-counted, nothing lost.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import truth
from e2e.checks import Checker, Expect, Recorder
from e2e.clients import close_all, open_many, tally
from e2e.contract import Key
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CLIENTS = 6  # distinct source ports, so the kernel spreads them over both workers
DATAGRAMS = 15
SIZE = 120


async def test_two_workers_count_exactly(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    config = lab.single_udp_config("e", metrics=True)
    endpoint = lab.single_udp_endpoint(config)
    check = Checker(lab.scope("e"), f"2 workers: {CLIENTS} clients", recorder)
    with lab.running("e", config, argv=(*lab.stunnerd, "--workers", "2")):
        await asyncio.to_thread(lab.wait_up, "e")
        since = await asyncio.to_thread(check.snapshot)
        allocs = await open_many(endpoint, local.username, local.password, CLIENTS)
        try:
            await asyncio.gather(
                *(a.echo_many(local.peer, DATAGRAMS, SIZE, tag=i) for i, a in enumerate(allocs))
            )
            await asyncio.to_thread(check.fresh)
        finally:
            await close_all(allocs)
        closed = time.time()
        counted = tally(endpoint.name, endpoint.protocol, allocs)
        expected: dict[Key, Expect] = truth.counters(counted)
        await asyncio.to_thread(check.expect_deltas, since, expected, after=closed)
        await asyncio.to_thread(
            check.expect_absolute, truth.gauges(endpoint.name, 0, "all left"), after=closed
        )
        await asyncio.to_thread(
            check.expect_max, since.at, time.time(), truth.gauges(endpoint.name, CLIENTS, "peak")
        )
    check.assert_all()
