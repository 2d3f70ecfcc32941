"""N clients per listener protocol, K datagrams of S bytes each, every echo received; every
connection metric must match the client-side count, per listener and per direction.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import truth
from e2e.checks import Checker, Expect, Recorder
from e2e.clauses import RELAY
from e2e.clients import Allocation, close_all, open_many, tally
from e2e.contract import Key
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CLIENTS = 3
DATAGRAMS = 20
SIZES = {"udp": 100, "tcp": 101, "tls": 203}  # 101 and 203: ChannelData padding on streams


async def test_every_metric_matches_client_truth(target: Target, recorder: Recorder) -> None:
    check = Checker(
        target.scope,
        f"traffic: {CLIENTS} clients x {DATAGRAMS} datagrams per listener",
        recorder,
    )
    since = await asyncio.to_thread(check.snapshot)
    backend_before = target.backend.counts() if target.backend else None

    protos = list(target.listeners)
    groups = await asyncio.gather(
        *(open_many(target.listeners[p], target.username, target.password, CLIENTS) for p in protos)
    )
    allocs: dict[str, list[Allocation]] = dict(zip(protos, groups, strict=True))
    try:
        await asyncio.gather(
            *(
                a.echo_many(target.peer, DATAGRAMS, SIZES[p], tag=i)
                for p in protos
                for i, a in enumerate(allocs[p])
            )
        )
        # Hold every allocation until a scrape has seen them: the gauges' peak is known.
        await asyncio.to_thread(check.fresh)
    finally:
        await close_all([a for group in allocs.values() for a in group])
    closed = time.time()

    tallies = {
        p: tally(target.listeners[p].name, target.listeners[p].protocol, allocs[p]) for p in protos
    }
    expected: dict[Key, Expect] = {}
    for t in tallies.values():
        expected |= truth.counters(t)
    await asyncio.to_thread(check.expect_deltas, since, expected, after=closed)

    zero: dict[Key, Expect] = {}
    peak: dict[Key, Expect] = {}
    for t in tallies.values():
        zero |= truth.gauges(t.name, 0, "all clients left", t.protocol)
        peak |= truth.gauges(t.name, CLIENTS, "all clients connected", t.protocol)
    await asyncio.to_thread(check.expect_absolute, zero, after=closed)
    await asyncio.to_thread(check.expect_max, since.at, time.time(), peak)

    if target.backend and backend_before:
        seen = target.backend.counts() - backend_before
        sent_p = sum(t.data.tx_packets for t in tallies.values())
        sent_b = sum(t.data.tx_bytes for t in tallies.values())
        check.expect_true(
            "echo backend saw every relayed payload",
            "echo backend counters (packets, bytes)",
            (seen.packets, seen.bytes) == (sent_p, sent_b),
            f"{sent_p}, {sent_b}",
            f"{seen.packets}, {seen.bytes}",
            RELAY,
        )

    names = target.listener_names or {t.name for t in tallies.values()}
    await asyncio.to_thread(
        check.expect_series, names, exact_names=target.listener_names is not None
    )
    await asyncio.to_thread(check.expect_metadata)
    check.assert_all()
