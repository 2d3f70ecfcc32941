"""The profiles' verdicts, proven on a deviant gateway of our own (e2e/deviant_stunnerd.py)
that behaves the way `stunner-v0.15` documents upstream: strict mode fails with exactly the
documented clauses, the profile passes, and an extra, undocumented fault still fails.

One traffic run per gateway; the same records are judged under each profile.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import clauses, truth
from e2e import contract as c
from e2e import gateway as gw
from e2e.checks import Checker, Expect, Record, Recorder
from e2e.clients import Allocation, Endpoint, channel_data, close_all, open_many, payload, tally
from e2e.contract import Key
from e2e.targets.base import Target
from e2e.targets.local import MEDIA_PLANE, LocalLab
from testkit.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

GAUGES = {f.name for f in c.GAUGES}
V015 = {  # what stunner-v0.15 documents, as clauses
    clauses.SERIES_AT_ZERO,
    clauses.UDP_CONNECTION,
    clauses.table_clause(c.ALLOCATIONS_ACTIVE.name),
    clauses.STREAM_FRAMES,
}
EXTRA = {clauses.table_clause(c.LISTENER_CONNECTIONS.name)}  # connections never closed


def _config(lab: LocalLab, role: str) -> gw.GatewayConfig:
    addr = lab.address[role]
    listeners = [
        gw.ListenerSpec(f"stunner/{role}-v015/{p}-listener", p.upper(), 0, [MEDIA_PLANE])
        for p in ("udp", "tcp")
    ]
    config = gw.GatewayConfig(
        name=f"e2e-{role}",
        address=addr,
        health_port=lab.gateways[role].health_port,
        metrics_url=lab.metrics_url(role),
        listeners=listeners,
        clusters=[lab.backend_cluster()],
    )
    for lis in config.listeners:
        lis.port = free_port(addr)
    return config


async def _drive(endpoint: Endpoint, target: Target, check: Checker) -> list[Allocation]:
    """Two clients, held until a scrape saw them; over TCP each also sends 20 frames in one
    write (per read: 1 packet)."""
    allocs = await open_many(endpoint, target.username, target.password, 2)
    try:
        for i, alloc in enumerate(allocs):
            await alloc.echo_many(target.peer, 3, 100, 40 + i)
            if endpoint.protocol != "udp":
                burst = [payload(41, s, 60) for s in range(20)]
                await alloc.write_frames([channel_data(alloc.channel(target.peer), p, True)
                                          for p in burst])  # fmt: skip
                await alloc.expect(target.peer, burst)
                alloc.data.tx_packets += len(burst)
                alloc.data.tx_bytes += sum(map(len, burst))
        await asyncio.to_thread(check.fresh)
    finally:
        await close_all(allocs)
    return allocs


async def _measure(lab: LocalLab, target: Target, role: str, extra: str) -> list[Record]:
    config = _config(lab, role)
    recorder = Recorder()
    check = Checker(lab.scope(role), f"deviant gateway {role} ({extra or 'v0.15'})", recorder)
    env = {"STUNNER_DEVIANT_EXTRA": extra} if extra else {}
    async with lab.running_async(role, config, argv=gw.DEVIANT, env=env):
        endpoints = [
            Endpoint(lis.name, lis.protocol.lower(), config.address, lis.port)  # type: ignore[arg-type]
            for lis in config.listeners
        ]
        since = await asyncio.to_thread(check.snapshot)
        fresh: dict[Key, Expect] = {}
        for ep in endpoints:
            fresh |= truth.appear_at_zero(ep.name, ep.protocol)
        await asyncio.to_thread(check.expect_absolute, fresh, settle=0.5)
        start = time.time()
        groups = await asyncio.gather(*(_drive(ep, target, check) for ep in endpoints))
        done = time.time()
        expected: dict[Key, Expect] = {}
        peak: dict[Key, Expect] = {}
        for ep, allocs in zip(endpoints, groups, strict=True):
            expected |= truth.counters(tally(ep.name, ep.protocol, allocs))
            expected |= truth.gauges(ep.name, 0, "clients left", ep.protocol)
            peak |= truth.gauges(ep.name, 2, "two clients", ep.protocol)
        counters = {k: v for k, v in expected.items() if k.family not in GAUGES}
        gauges = {k: v for k, v in expected.items() if k.family in GAUGES}
        await asyncio.to_thread(check.expect_deltas, since, counters, after=done, settle=1.0)
        await asyncio.to_thread(check.expect_absolute, gauges, after=done, settle=1.0)
        await asyncio.to_thread(check.expect_max, start, time.time(), peak)
        await asyncio.to_thread(check.expect_series, {ep.name for ep in endpoints})
        await asyncio.to_thread(check.expect_metadata)
    return recorder.records


async def test_profiles_judge_a_deviant_gateway(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    plain, faulty = await asyncio.gather(
        _measure(lab, local, "g", ""), _measure(lab, local, "h", "connections-never-closed")
    )
    for rec in (*plain, *faulty):  # in the run's report, as negative controls
        rec.negative = True
        recorder.add(rec)
    found = {
        "strict, documented behaviour": clauses.failing_clauses(plain, "spec"),
        "stunner-v0.15, documented behaviour": clauses.failing_clauses(plain, "stunner-v0.15"),
        "stunner-v1, documented behaviour": clauses.failing_clauses(plain, "stunner-v1"),
        "stunner-v0.15, + undocumented fault": clauses.failing_clauses(faulty, "stunner-v0.15"),
        "strict, + undocumented fault": clauses.failing_clauses(faulty, "spec"),
    }
    want = {
        "strict, documented behaviour": V015,
        "stunner-v0.15, documented behaviour": set(),
        "stunner-v1, documented behaviour": V015,  # v1 documents other behaviours
        "stunner-v0.15, + undocumented fault": EXTRA,
        "strict, + undocumented fault": V015 | EXTRA,
    }
    wrong = {k: (sorted(found[k]), sorted(want[k])) for k in want if found[k] != want[k]}
    assert not wrong, "failing clauses (got, expected): " + repr(wrong)
    # Every documented deviation was seen and named: none of them hid in 'conforms'.
    rows = {v.clause.id: v.verdict for v in clauses.verdicts(plain, "stunner-v0.15")}
    assert {k for k, v in rows.items() if v.startswith("deviates (documented")} == V015
