"""The metricsEndpoint scenario, shared by the stunnerd-config and the stunnerctl variants:
relay through a running gateway with metrics off, turn them on by rewriting its watched config,
and check that Prometheus sees the series without a restart or a dropped allocation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from e2e import truth
from e2e.checks import Checker, Expect
from e2e.clients import Address, Allocation, Endpoint, tally
from e2e.gateway import Gateway

BEFORE, AFTER, SIZE = 5, 5, 90
ENABLE_TIMEOUT = 15.0  # watch poll + metrics server start + next scrape


async def enable_metrics_live(
    check: Checker,
    gateway: Gateway,
    endpoint: Endpoint,
    credentials: tuple[str, str],
    peer: Address,
    enable: Callable[[], None],
) -> None:
    """`enable()` rewrites the config with a metrics endpoint (the `kubectl patch` step)."""
    up = f"sum(up{{{check.scope.selector}}})"
    series = check.scope.sel('__name__=~"stunner_.+"')
    pid = gateway.pid
    alloc = await Allocation.open(endpoint, *credentials)
    try:
        await alloc.echo_many(peer, BEFORE, SIZE, tag=1)
        off = {
            "up while metrics are off": (up, Expect.exact(0)),
            "stunner_* series while metrics are off": (
                f"count({series}) or vector(0)",
                Expect.exact(0),
            ),
        }
        await asyncio.to_thread(check.expect_values, off, any_scrape=True)
        patched = time.time()
        enable()
        on = {"up after the patch": (up, Expect.exact(1))}
        await asyncio.to_thread(
            check.expect_values, on, after=patched, settle=ENABLE_TIMEOUT, any_scrape=True
        )
        relayed = alloc.relayed
        await alloc.echo_many(peer, AFTER, SIZE, tag=2)
        await asyncio.to_thread(
            check.expect_absolute, truth.gauges(endpoint.name, 1, "the allocation survived")
        )
    finally:
        await alloc.close()
    closed = time.time()
    # The listener exists since the gateway started, so its counters include the traffic
    # relayed before the metrics server was on.
    expected = truth.counters(tally(endpoint.name, endpoint.protocol, [alloc]))
    await asyncio.to_thread(check.expect_absolute, expected, after=closed)
    await asyncio.to_thread(check.expect_absolute, truth.gauges(endpoint.name, 0), after=closed)
    check.expect_true(
        "no restart, same allocation",
        "stunnerd pid and relayed address",
        gateway.pid == pid and gateway.alive() and alloc.relayed == relayed,
        f"pid {pid}, relayed {relayed}",
        f"pid {gateway.pid} alive={gateway.alive()}, relayed {alloc.relayed}",
    )
    await asyncio.to_thread(check.expect_series, [endpoint.name])
