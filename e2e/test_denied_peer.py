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
from e2e.clauses import ADMISSION, ERROR_403, RELAY
from e2e.clients import Allocation, payload, tally
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _code(exc: BaseException | None) -> str:
    """The answer's error code, or what came instead; never raises on a deviant answer."""
    if exc is None:
        return "no error"
    response = getattr(exc, "response", None)
    if response is None:
        return f"no answer ({type(exc).__name__})"
    code = response.attributes.get("ERROR-CODE")
    if not code:
        return "error response without ERROR-CODE"
    return str(code[0])


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
        try:
            bind_error: BaseException | None = await alloc.first_error()
        except TimeoutError as exc:
            bind_error = exc
        bind = _code(bind_error)
        check.expect_true("ChannelBind answer", "client", bind == "403", "403", bind, ERROR_403)
        try:
            await alloc.request(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": peer})
            perm = "success"
        except stun.TransactionError as exc:
            perm = _code(exc)
        check.expect_true("CreatePermission answer", "client", perm == "403", "403", perm,
                          ERROR_403)  # fmt: skip
        alloc.indicate(stun.Method.SEND, **{"XOR-PEER-ADDRESS": peer, "DATA": payload(0, 1, 80)})
        # A request after the indication: once it is answered, the indication was handled.
        try:
            await alloc.request(stun.Method.REFRESH, LIFETIME=600)
        except stun.TransactionError as exc:
            check.expect_true("Refresh answer", "client", False, "success", _code(exc), RELAY)
    finally:
        await alloc.close()
    closed = time.time()

    t = tally(name, endpoint.protocol, [alloc])
    cluster = (c.CLUSTER_PACKETS, c.CLUSTER_BYTES)
    expected = truth.counters(t) | truth.zero_counters(name, cluster, ADMISSION)
    await asyncio.to_thread(check.expect_deltas, since, expected, after=closed)
    await asyncio.to_thread(
        check.expect_absolute, truth.gauges(name, 0, "client left", endpoint.protocol)
    )
    if target.backend and before:
        seen = target.backend.counts() - before
        check.expect_true(
            "nothing reached the peer",
            "echo backend counters",
            seen.packets == 0,
            "0",
            str(seen.packets),
            ADMISSION,
        )
    check.assert_all()
