"""A peer outside the cluster: ChannelBind and CreatePermission get 403, a Send indication is
dropped, nothing reaches the peer and no cluster traffic is counted; the listener still counts
every frame.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aioice import stun

from e2e import contract as c
from e2e import truth
from e2e.checks import Checker, Recorder
from e2e.clients import Allocation, payload, tally
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.attributes["ERROR-CODE"][0]) if response is not None else repr(exc)


async def test_peer_outside_cluster_is_refused(target: Target, recorder: Recorder) -> None:
    if target.denied is not None:
        endpoint, peer = target.denied, target.peer  # a real echo peer, just not in its cluster
    else:
        endpoint, peer = target.listeners["udp"], target.outside_peer
    name = endpoint.name
    check = Checker(target.scope, f"peer {peer[0]} outside the cluster of {name}", recorder)
    since = await asyncio.to_thread(check.snapshot)
    before = target.backend.counts() if target.backend else None

    alloc = await Allocation.open(endpoint, target.username, target.password)
    try:
        assert alloc.transport is not None
        alloc.transport.sendto(payload(0, 0, 80), peer)  # aioice binds a channel first
        bind_error = await alloc.first_error()
        check.expect_true(
            "ChannelBind answer", "client", _code(bind_error) == "403", "403", _code(bind_error)
        )
        try:
            await alloc.request(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": peer})
            perm = "success"
        except stun.TransactionFailed as exc:
            perm = _code(exc)
        check.expect_true("CreatePermission answer", "client", perm == "403", "403", perm)
        alloc.indicate(stun.Method.SEND, **{"XOR-PEER-ADDRESS": peer, "DATA": payload(0, 1, 80)})
        # A request after the indication: once it is answered, the indication was handled.
        await alloc.request(stun.Method.REFRESH, LIFETIME=600)
    finally:
        await alloc.close()
    closed = time.time()

    t = tally(name, endpoint.protocol, [alloc])
    expected = truth.counters(t) | truth.zero_counters(name, (c.CLUSTER_PACKETS, c.CLUSTER_BYTES))
    await asyncio.to_thread(check.expect_deltas, since, expected, after=closed)
    await asyncio.to_thread(check.expect_absolute, truth.gauges(name, 0, "client left"))
    if target.backend and before:
        seen = target.backend.counts() - before
        check.expect_true(
            "nothing reached the peer",
            "echo backend counters",
            seen.packets == 0,
            "0",
            str(seen.packets),
        )
    check.assert_all()
