"""The checks must catch a wrong relay: a gateway whose cluster tx bytes read one byte high
(e2e/miscounting_stunnerd.py, a test-only wrapper) must fail exactly that check.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import contract as c
from e2e import gateway as gw
from e2e import truth
from e2e.checks import Checker, Recorder
from e2e.clients import close_all, open_many, tally
from e2e.contract import TX, Key
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def test_checks_catch_a_miscounting_gateway(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    config = lab.single_udp_config("c", metrics=True)
    endpoint = lab.single_udp_endpoint(config)
    check = Checker(
        lab.scope("c"), "miscounting gateway (cluster tx bytes +1)", recorder, negative=True
    )
    with lab.running("c", config, argv=gw.MISCOUNTING):
        allocs = await open_many(endpoint, local.username, local.password, 2)
        try:
            await asyncio.gather(*(a.echo_many(local.peer, 10, 77, i) for i, a in
                                   enumerate(allocs)))  # fmt: skip
        finally:
            await close_all(allocs)
        closed = time.time()
        # A fresh gateway: absolute values are the truth since its listener was created.
        expected = truth.counters(tally(endpoint.name, "udp", allocs))
        expected |= truth.gauges(endpoint.name, 0)
        await asyncio.to_thread(check.expect_absolute, expected, after=closed, settle=2.0)

    wrong = f"value {Key(c.CLUSTER_BYTES.name, endpoint.name, TX)}"
    with pytest.raises(AssertionError, match="stunner_cluster_bytes_total"):
        check.assert_all()
    assert [r.check for r in check.failures()] == [wrong]
    (bad,) = check.failures()
    assert float(bad.got) == float(bad.expected) + 1
