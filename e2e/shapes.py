"""Traffic shapes that expose fault classes a symmetric, serial, well-behaved client hides.

Each shape drives one listener and returns the exact truth for it (counters and gauges, from
what its clients did) plus client-side facts it checked on the way. Locally every shape has
its own listener, so test_shapes runs them side by side; against an external target they run
one after another on the target's listeners.

| shape | fault class it exposes |
|---|---|
| asym | rx/tx swapped: the peer answers bigger, and every third datagram twice |
| unsolicited | datagrams from peers without a permission counted as cluster rx |
| pipeline | TCP/TLS counted per read: 40 frames in one write, and frames split over writes |
| vanish | a TCP/TLS reset without Refresh(0) that leaves the allocation or the gauges behind |
| sendfail | a send the kernel refused counted as sent (peer port 0: sendto fails, EINVAL) |
| guard | an answer the amplification guard withheld counted as tx |
| expiry | UDP clients that fall silent: gauges must follow the allocation's expiry (local: a
gateway with `max_allocation_lifetime: 3`) |
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aioice import stun

from e2e import clauses, truth
from e2e import contract as c
from e2e.checks import Checker, Expect
from e2e.clients import (
    ASYMMETRIC,
    Address,
    Allocation,
    Endpoint,
    channel_data,
    close_all,
    open_many,
    payload,
    tally,
)
from e2e.contract import Key
from e2e.netutil import poll
from e2e.targets.base import Target

ShapeFn = Callable[["Run"], Awaitable[dict[Key, Expect]]]


@dataclass
class Run:
    """One shape on one listener: where to send, who checks, what the client saw."""

    target: Target
    endpoint: Endpoint
    check: Checker
    facts: list[tuple[str, bool, str, str, str]] = field(default_factory=list)

    def fact(
        self, what: str, ok: bool, expected: object, got: object, clause: str = clauses.HARNESS
    ) -> None:
        self.facts.append((what, ok, str(expected), str(got), clause))

    async def open(self, count: int) -> list[Allocation]:
        t = self.target
        return await open_many(self.endpoint, t.username, t.password, count)

    def counted(self, allocs: list[Allocation], gauges: int = 0) -> dict[Key, Expect]:
        t = tally(self.endpoint.name, self.endpoint.protocol, allocs)
        return truth.counters(t) | truth.gauges(t.name, gauges, "clients left", t.protocol)


def reclause(
    expected: dict[Key, Expect], clause: str, families: tuple[c.Family, ...], direction: str = ""
) -> dict[Key, Expect]:
    """The same expectations, those of `families` (and `direction`) tied to `clause`."""
    names = {f.name for f in families}
    return {
        k: (
            Expect(v.lo, v.hi, v.why, clause)
            if k.family in names and (not direction or k.direction == direction)
            else v
        )
        for k, v in expected.items()
    }


# -- asymmetric peer ------------------------------------------------------------------------


async def asym(run: Run) -> dict[Key, Expect]:
    peer = run.target.asymmetric_peer
    assert peer is not None
    allocs = await run.open(2)
    try:

        async def talk(i: int, alloc: Allocation) -> None:
            for seq in range(9):
                data = payload(30 + i, seq, 90 + seq)
                await alloc.exchange(peer, data, ASYMMETRIC(data))

        await asyncio.gather(*(talk(i, a) for i, a in enumerate(allocs)))
    finally:
        await close_all(allocs)
    t = tally(run.endpoint.name, run.endpoint.protocol, allocs)
    run.fact(
        "asymmetric peer: answers differ from requests",
        t.data.rx_packets != t.data.tx_packets and t.data.rx_bytes != t.data.tx_bytes,
        "rx != tx",
        f"{t.data.rx_packets}/{t.data.rx_bytes} vs {t.data.tx_packets}/{t.data.tx_bytes}",
    )
    return run.counted(allocs)


# -- a stranger sends to the relay address --------------------------------------------------


async def unsolicited(run: Run) -> dict[Key, Expect]:
    peer = run.target.peer
    (alloc,) = await run.open(1)
    sent = 0
    try:
        await alloc.echo_many(peer, 2, 100, 50)  # a permission for the peer's IP only
        assert alloc.relayed is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind((run.target.stranger_host, 0))
            for seq in range(12):
                stranger.sendto(payload(51, seq, 70), tuple(alloc.relayed))
                sent += 1
        # After the strangers' datagrams: an echo that would come second if any were relayed
        # (alloc.echo fails on a stray datagram).
        await alloc.echo_many(peer, 2, 100, 52)
    finally:
        await close_all([alloc])
    run.fact("stranger datagrams sent to the relay address", sent == 12, 12, sent)
    cluster = (c.CLUSTER_PACKETS, c.CLUSTER_BYTES)
    return reclause(run.counted([alloc]), clauses.CLUSTER_ADMITTED, cluster, c.RX)


# -- pipelined and split frames --------------------------------------------------------------


async def pipeline(run: Run) -> dict[Key, Expect]:
    peer = run.target.peer
    stream = run.endpoint.protocol != "udp"
    (alloc,) = await run.open(1)
    try:
        await alloc.echo_many(peer, 1, 64, 60)  # binds the channel
        ch = alloc.channel(peer)
        burst = [payload(61, seq, 60 + seq) for seq in range(40)]
        await alloc.write_frames([channel_data(ch, p, stream) for p in burst])
        await alloc.expect(peer, burst)
        split = [payload(62, seq, 150 + seq) for seq in range(6)]
        await alloc.write_frames([channel_data(ch, p, stream) for p in split], split=3)
        await alloc.expect(peer, split)
        for data in (*burst, *split):
            alloc.data.tx_packets += 1
            alloc.data.tx_bytes += len(data)
    finally:
        await close_all([alloc])
    return run.counted([alloc])


# -- clients that vanish -------------------------------------------------------------------


async def vanish(run: Run) -> dict[Key, Expect]:
    allocs = await run.open(2)
    try:
        await asyncio.gather(*(a.echo_many(run.target.peer, 3, 80, 70 + i)
                               for i, a in enumerate(allocs)))  # fmt: skip
        await asyncio.to_thread(run.check.fresh)  # a scrape saw them
        await asyncio.gather(*(a.vanish() for a in allocs))  # a reset, no Refresh(0)
    finally:
        await close_all(allocs)
    return run.counted(allocs)


# -- sends the kernel refuses ----------------------------------------------------------------


async def sendfail(run: Run) -> dict[Key, Expect]:
    """A peer in the cluster at port 0: the relay's sendto fails (EINVAL) before anything
    leaves, for ChannelData (one and a burst) and for a Send indication."""
    peer = run.target.peer
    dead: Address = (peer[0], 0)
    stream = run.endpoint.protocol != "udp"
    (alloc,) = await run.open(1)
    refused = 0
    try:
        await alloc.echo_many(peer, 1, 64, 80)
        assert alloc.transport is not None
        alloc.transport.sendto(payload(81, 0, 90), dead)  # ChannelBind, then ChannelData
        refused += 1
        await asyncio.to_thread(
            poll,
            lambda: dead in alloc.inner.peer_to_channel,
            bool,
            timeout=5,
            what="channel bound to port 0",
        )
        ch = alloc.channel(dead)
        burst = [payload(82, seq, 100) for seq in range(30)]
        await alloc.write_frames([channel_data(ch, p, stream) for p in burst])
        refused += len(burst)
        alloc.indicate(stun.Method.SEND, **{"XOR-PEER-ADDRESS": dead, "DATA": payload(83, 0, 90)})
        refused += 1
        # In order after the refused ones: once this echo is back, they were all handled.
        await alloc.echo_many(peer, 1, 64, 84)
    finally:
        await close_all([alloc])
    run.fact("datagrams to port 0 (refused by the kernel)", refused == 32, 32, refused)
    cluster = (c.CLUSTER_PACKETS, c.CLUSTER_BYTES)
    return reclause(run.counted([alloc]), clauses.TX_LEFT, cluster, c.TX)


# -- the amplification guard -------------------------------------------------------------


def _request(method: stun.Method, **attributes: object) -> stun.Message:
    msg = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
    msg.attributes.update(attributes)
    return msg


async def guard(run: Run) -> dict[Key, Expect]:
    """Unauthenticated requests from one fresh source, more than its byte budget covers: the
    guard answers the first ones at once and withholds the rest (docs/security.md, "No
    amplifier"). The last request is bigger than its answer, so it is answered; its answer
    comes after every earlier one, so what arrived is exactly what left.
    """
    return await asyncio.to_thread(_guard_blocking, run)


GUARD_REQUESTS = 150  # 401s to 28-byte Allocates: ~52 B each beyond what they bring; > 4 KiB


def _guard_blocking(run: Run) -> dict[Key, Expect]:
    last = _request(stun.Method.BINDING, SOFTWARE="x" * 400)
    sends = [
        bytes(_request(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 0x11000000}))
        for _ in range(GUARD_REQUESTS)  # each its own transaction: each earns a 401
    ]
    sends.append(bytes(last))
    got: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((run.target.stranger_host, 0))
        sock.settimeout(3.0)
        sock.connect((run.endpoint.host, run.endpoint.port))
        for frame in sends:
            sock.send(frame)
        while not got or got[-1][8:20] != last.transaction_id:
            try:
                got.append(sock.recv(65535))
            except TimeoutError:
                break
    answered = got[-1][8:20] == last.transaction_id if got else False
    yes = "yes" if answered else "no"
    run.fact("the last (large) request was answered", answered, "yes", yes, clauses.RELAY)
    run.fact("answers withheld by the guard", True, "recorded", len(sends) - len(got))
    if run.target.lab is not None:  # a fresh source: the guard must have withheld some
        withheld = len(sends) - len(got)
        run.fact(
            "the guard withheld answers (fresh source)",
            withheld > 0,
            "> 0",
            withheld,
            clauses.GUARD,
        )
    name = run.endpoint.name
    why = "answers that arrived; a withheld one never left"
    expected = {
        Key(c.LISTENER_PACKETS.name, name, c.RX): Expect.exact(len(sends), "requests sent"),
        Key(c.LISTENER_BYTES.name, name, c.RX): Expect.exact(sum(map(len, sends)), "bytes sent"),
        Key(c.LISTENER_PACKETS.name, name, c.TX): Expect.exact(len(got), why, clauses.TX_LEFT),
        Key(c.LISTENER_BYTES.name, name, c.TX): Expect.exact(
            sum(map(len, got)), why, clauses.TX_LEFT
        ),
    }
    families = (
        c.CLUSTER_PACKETS,
        c.CLUSTER_BYTES,
        c.CLUSTER_CONNECTIONS_TOTAL,
        c.LISTENER_CONNECTIONS_TOTAL,
    )
    return (
        expected
        | truth.zero_counters(name, families)
        | truth.gauges(name, 0, "no allocation", "udp")
    )


# -- UDP silence until expiry ----------------------------------------------------------------

LIFETIME_CAP = 3  # seconds: admin.limits.max_allocation_lifetime of the expiry gateway


async def expiry(run: Run) -> dict[Key, Expect]:
    """Two UDP clients relay, stay until a scrape saw them (aioice refreshes the short
    lifetime meanwhile), then fall silent: no Refresh(0). The gateway's lifetime cap ends the
    allocations; the gauges must drop back to 0 and the peak must have been 2."""
    start = time.time()
    allocs = await run.open(2)
    try:
        await asyncio.gather(*(a.echo_many(run.target.peer, 3, 90, 90 + i)
                               for i, a in enumerate(allocs)))  # fmt: skip
        await asyncio.to_thread(run.check.fresh)
        silent = time.time()
        await asyncio.gather(*(a.vanish() for a in allocs))
    finally:
        await close_all(allocs)
    name = run.endpoint.name
    expected = run.counted(allocs)
    # The gauges reach 0 only by expiry: the cap, one sweep and one scrape later.
    gauges = reclause(
        {k: v for k, v in expected.items() if k.family in _GAUGES},
        clauses.LIFETIME,
        (c.CLUSTER_CONNECTIONS, c.ALLOCATIONS_ACTIVE),
    )
    settle = LIFETIME_CAP + 6.0
    await asyncio.to_thread(run.check.expect_absolute, gauges, after=silent, settle=settle)
    # The peak over the whole life (a scrape saw both clients before the silence).
    peak = truth.gauges(name, 2, "both clients held an allocation", "udp")
    await asyncio.to_thread(run.check.expect_max, start, time.time(), peak)
    return {k: v for k, v in expected.items() if k.family not in _GAUGES}


_GAUGES = {f.name for f in c.GAUGES}

SHAPES: dict[str, tuple[ShapeFn, tuple[str, ...]]] = {
    "asym": (asym, ("udp", "tcp")),
    "unsolicited": (unsolicited, ("udp",)),
    "pipeline": (pipeline, ("udp", "tcp", "tls")),
    "vanish": (vanish, ("tcp", "tls")),
    "sendfail": (sendfail, ("udp", "tcp")),
    "guard": (guard, ("udp",)),
}
# Shapes that need a gateway of their own (local only): test_shapes starts it.
LOCAL_SHAPES: dict[str, ShapeFn] = {"expiry": expiry}
