"""Traffic shapes that expose fault classes (e2e/shapes.py): an asymmetric peer, strangers
sending to relay addresses, pipelined and split stream frames, clients that vanish, sends the
kernel refuses, answers the amplification guard withholds. Every counter exact, every gauge
back to 0. Locally the shapes run side by side, each on its own listener.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import clauses
from e2e import contract as c
from e2e.checks import Checker, Recorder
from e2e.shapes import LIFETIME_CAP, LOCAL_SHAPES, SHAPES, Run
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GAUGES = {f.name for f in c.GAUGES}
EXPIRY_LISTENER = "stunner/expiry-gateway/udp-listener"


async def _run_one(run: Run, shape: str) -> Checker:
    check = run.check
    fn = SHAPES[shape][0] if shape in SHAPES else LOCAL_SHAPES[shape]
    since = await asyncio.to_thread(check.snapshot)
    try:
        expected = await fn(run)
    except Exception as exc:  # a non-conforming answer is a finding, not a crash
        check.expect_true(
            f"{shape} traffic completed", "client", False, "completed", repr(exc), clauses.RELAY
        )
        return check
    done = time.time()
    for what, ok, want, got, clause in run.facts:
        check.expect_true(what, "client", ok, want, got, clause)
    counters = {k: v for k, v in expected.items() if k.family not in GAUGES}
    gauges = {k: v for k, v in expected.items() if k.family in GAUGES}
    await asyncio.to_thread(check.expect_deltas, since, counters, after=done)
    await asyncio.to_thread(check.expect_absolute, gauges, after=done)
    return check


def _runs(target: Target, recorder: Recorder) -> list[tuple[Run, str]]:
    runs = []
    for shape, (_, protocols) in SHAPES.items():
        for protocol in protocols:
            endpoint = target.shape_endpoint(shape, protocol)
            if endpoint is None or (shape == "asym" and target.asymmetric_peer is None):
                continue  # not testable here: the report's clause table says so
            check = Checker(target.scope, f"shape {shape} ({protocol})", recorder)
            runs.append((Run(target, endpoint, check), shape))
    return runs


async def _expiry(target: Target, recorder: Recorder) -> list[Checker]:
    """UDP silence until expiry, on gateway `f` with a short lifetime cap (local only)."""
    lab = target.lab
    assert lab is not None
    config = lab.single_udp_config("f", metrics=True)
    config.listeners[0].name = EXPIRY_LISTENER
    config.limits = {"max_allocation_lifetime": LIFETIME_CAP}
    check = Checker(lab.scope("f"), f"shape expiry (udp, lifetime cap {LIFETIME_CAP} s)", recorder)
    async with lab.running_async("f", config):
        run = Run(target, lab.single_udp_endpoint(config), check)
        return [await _run_one(run, "expiry")]


async def test_traffic_shapes(target: Target, recorder: Recorder) -> None:
    runs = _runs(target, recorder)
    if target.shape_listeners:  # each shape on its own listener: side by side
        groups = await asyncio.gather(
            _expiry(target, recorder), *(_run_one(run, shape) for run, shape in runs)
        )
        checks = [*groups[0], *groups[1:]]  # type: ignore[misc]
    else:  # shared listeners: one after another
        checks = [await _run_one(run, shape) for run, shape in runs]
    bad = [f"{k.scenario}: {f.check}: expected {f.expected}, got {f.got}"
           for k in checks for f in k.failures()]  # fmt: skip
    assert not bad, "\n".join(bad)
