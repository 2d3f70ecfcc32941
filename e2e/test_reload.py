"""A config reload while traffic flows: a listener is added (its series appear at 0) and
removed again (its series disappear) while clients keep relaying on the others. No echo may be
lost, no counter may go down (`resets()` = 0), and the totals still match the clients' counts.
"""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

from e2e import contract as c
from e2e import gateway as gw
from e2e import truth
from e2e.checks import Checker, Expect, Recorder
from e2e.clauses import REMOVED_SERIES
from e2e.clients import close_all, keep_echoing, open_many, tally
from e2e.contract import Key
from e2e.targets.base import Target
from testkit.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CLIENTS = 2
SIZE = 120
EXTRA = "stunner/extra-gateway/udp-listener"


async def test_reload_while_traffic_flows(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    gateway = lab.gateways["a"]
    original = lab.configs["a"]
    assert isinstance(original, gw.GatewayConfig)
    with_extra = copy.deepcopy(original)
    with_extra.listeners.append(
        gw.ListenerSpec(EXTRA, "UDP", free_port(lab.address["a"]), [original.clusters[0].name])
    )
    check = Checker(local.scope, "config reload while traffic flows", recorder)
    since = await asyncio.to_thread(check.snapshot)
    protos = [p for p in ("udp", "tcp") if p in local.listeners]
    groups = await asyncio.gather(
        *(open_many(local.listeners[p], local.username, local.password, CLIENTS) for p in protos)
    )
    stop = asyncio.Event()
    senders = [
        asyncio.create_task(keep_echoing(a, local.peer, stop, SIZE)) for g in groups for a in g
    ]
    try:
        added = time.time()
        gateway.write(with_extra)
        appear = truth.appear_at_zero(EXTRA, "udp")
        await asyncio.to_thread(check.expect_absolute, appear, after=added)
        removed = time.time()
        gateway.write(original)
        gone = {
            "series of the removed listener": (
                f'count({{__name__=~"stunner_.+", name="{EXTRA}", {local.scope.selector}}})'
                " or vector(0)",
                Expect.exact(0, "a removed listener's series disappear", REMOVED_SERIES),
            )
        }
        await asyncio.to_thread(check.expect_values, gone, after=removed)
    finally:
        stop.set()
        results = await asyncio.gather(*senders, return_exceptions=True)
        await close_all([a for g in groups for a in g])
        gateway.write(original)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"echoes lost during the reload: {errors[0]!r}"
    closed = time.time()

    expected: dict[Key, Expect] = {}
    for p, group in zip(protos, groups, strict=True):
        t = tally(local.listeners[p].name, local.listeners[p].protocol, group)
        assert t.data.tx_packets > 0
        expected |= truth.counters(t) | truth.gauges(t.name, 0, "", t.protocol)
    await asyncio.to_thread(check.expect_deltas, since, {
        k: v for k, v in expected.items() if k.family not in {f.name for f in c.GAUGES}
    }, after=closed)  # fmt: skip
    await asyncio.to_thread(check.expect_absolute, {
        k: v for k, v in expected.items() if k.family in {f.name for f in c.GAUGES}
    })  # fmt: skip
    end = await asyncio.to_thread(check.fresh)
    await asyncio.to_thread(check.expect_no_resets, since.at, end, [f.name for f in c.COUNTERS])
    assert local.listener_names is not None
    await asyncio.to_thread(check.expect_series, local.listener_names)
    check.assert_all()
