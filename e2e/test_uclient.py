"""coturn's turnutils_uclient, a client nobody here wrote, through the UDP listener: cluster
counters must equal what uclient and the echo backend counted; connection counts follow its
fixed pattern (a leaked probe allocation plus the real one per client).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e import contract as c
from e2e import truth
from e2e.checks import Checker, Expect, Recorder
from e2e.contract import RX, TX, Key
from e2e.targets.base import Target
from e2e.uclient import ALLOCATIONS_PER_CLIENT, LEAKED_PER_CLIENT, run_uclient, uclient_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CLIENTS = 2
MESSAGES = 10
SIZE = 120
# Signaling messages per emulated client, each way (seen: 15 in, 14 out): probe Allocate (401)
# and Allocate, the real Allocate (401) and Allocate, a Refresh after each, 4 ChannelBinds, a
# Refresh(0); timers add refreshes, and stunnerd's UDP amplification guard may leave an
# unauthenticated retransmission unanswered.
SIGNALING_PER_CLIENT = (9, 20)
STUN_BYTES = (20, 250)  # smallest and largest STUN message either side sends here


async def test_uclient_udp(target: Target, recorder: Recorder) -> None:
    if uclient_binary() is None:
        pytest.skip("turnutils_uclient not found (apt-get install coturn)")
    if target.uclient is None or target.backend is None:
        pytest.skip("needs a listener reserved for uclient (its probe allocations leak): local")
    ep, name = target.uclient, target.uclient.name
    check = Checker(target.scope, f"uclient: {CLIENTS} clients x {MESSAGES} x {SIZE} B", recorder)
    since = await asyncio.to_thread(check.snapshot)
    before = target.backend.counts()
    run = await run_uclient(
        ep.host, ep.port, target.username, target.password, target.peer,
        clients=CLIENTS, messages=MESSAGES, size=SIZE,
    )  # fmt: skip
    done = time.time()
    seen = target.backend.counts() - before
    data = CLIENTS * MESSAGES
    check.expect_true(
        "uclient and the echo backend agree",
        "uclient summary vs echo backend (msgs, bytes, lost)",
        (run.sent_msgs, run.recv_msgs, run.sent_bytes, run.lost)
        == (seen.packets, seen.packets, seen.bytes, 0)
        and seen.packets == data,
        f"{data}, {data}, {data * SIZE}, 0",
        f"{run.sent_msgs}, {run.recv_msgs}, {run.sent_bytes}, {run.lost} (backend {seen})",
    )
    lo, hi = (n * CLIENTS for n in SIGNALING_PER_CLIENT)
    frame = SIZE + 4  # ChannelData header
    allocations = ALLOCATIONS_PER_CLIENT * CLIENTS
    why_sig = "data frames + signaling margin"
    expected = {
        Key(c.LISTENER_CONNECTIONS_TOTAL.name, name): Expect.exact(allocations, "probe + real"),
        Key(c.CLUSTER_CONNECTIONS_TOTAL.name, name): Expect.exact(allocations, "probe + real"),
        Key(c.CLUSTER_PACKETS.name, name, TX): Expect.exact(seen.packets, "backend received"),
        Key(c.CLUSTER_BYTES.name, name, TX): Expect.exact(seen.bytes, "backend received"),
        Key(c.CLUSTER_PACKETS.name, name, RX): Expect.exact(run.recv_msgs, "uclient received"),
        Key(c.CLUSTER_BYTES.name, name, RX): Expect.exact(run.recv_bytes, "uclient received"),
    }
    for direction in (RX, TX):
        expected[Key(c.LISTENER_PACKETS.name, name, direction)] = Expect.between(
            data + lo, data + hi, why_sig
        )
        expected[Key(c.LISTENER_BYTES.name, name, direction)] = Expect.between(
            data * frame + lo * STUN_BYTES[0], data * (frame + 3) + hi * STUN_BYTES[1], why_sig
        )
    await asyncio.to_thread(check.expect_deltas, since, expected, after=done)
    leaked = LEAKED_PER_CLIENT * CLIENTS
    await asyncio.to_thread(
        check.expect_absolute, truth.gauges(name, leaked, "uclient never deletes its probe"),
        after=done,
    )  # fmt: skip
    check.assert_all()
