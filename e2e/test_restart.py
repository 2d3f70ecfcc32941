"""A reload that restarts existing listeners while the gateway carries traffic: one UDP
listener moves to another port, one TLS listener gets a new certificate.

The restarted listeners keep their series and their counts (`resets()` = 0, totals = every
phase's traffic), the allocations they held end with the restart (gauges back to 0), new
clients reach the moved port and see the new certificate, and a client echoing on another
listener throughout loses nothing and is counted exactly.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ssl
import time

import pytest

from e2e import contract as c
from e2e import gateway as gw
from e2e import truth
from e2e.certs import SelfSigned, self_signed
from e2e.checks import Checker, Expect, Recorder
from e2e.clients import Allocation, Endpoint, close_all, keep_echoing, open_many, tally
from e2e.contract import Key
from e2e.netutil import poll
from e2e.targets.base import Target
from e2e.targets.local import shape_name
from testkit.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

UDP = shape_name("restart/udp")
TLS = shape_name("restart/tls")
GAUGES = {f.name for f in c.GAUGES}


def _trusting(*certs: SelfSigned) -> ssl.SSLContext:
    return ssl.create_default_context(cadata="".join(c.cert_pem.decode() for c in certs))


def _restarted(config: gw.GatewayConfig, port: int, cert: SelfSigned) -> gw.GatewayConfig:
    """`config` with the restart UDP listener on `port` and the restart TLS one on `cert`."""
    new = copy.deepcopy(config)
    for lis in new.listeners:
        if lis.name == UDP:
            lis.port = port
        elif lis.name == TLS:
            lis.cert_b64, lis.key_b64 = cert.cert_b64, cert.key_b64
    return new


def _endpoint(config: gw.GatewayConfig, name: str, ctx: ssl.SSLContext | None) -> Endpoint:
    (lis,) = (lis for lis in config.listeners if lis.name == name)
    protocol = "tls" if ctx else "udp"
    return Endpoint(name, protocol, config.address, lis.port, ctx)


def _served(gateway: gw.Gateway, protocol: str, address: str, port: int) -> int:
    """How often stunnerd's log says it started serving `protocol` on `address:port`."""
    text = gateway.log_path.read_text(errors="replace")
    return text.count(f"serving {protocol} on {address}:{port} ")


async def _restarted_in_log(gateway: gw.Gateway, checks: list[tuple[str, str, int, int]]) -> None:
    """Until the log shows each (protocol, address, port) served at least `times` times:
    clients that tried earlier would lose frames that stunnerd never saw."""
    await asyncio.to_thread(
        poll,
        lambda: [_served(gateway, p, a, port) >= n for p, a, port, n in checks],
        all,
        timeout=15,
        what="the restarted listeners serving",
    )


async def test_listener_restart_under_traffic(local: Target, recorder: Recorder) -> None:
    lab = local.lab
    assert lab is not None
    gateway = lab.gateways["a"]
    before = lab.configs["a"]
    assert isinstance(before, gw.GatewayConfig)
    rotated = self_signed(lab.address["a"])
    after = _restarted(before, free_port(lab.address["a"]), rotated)
    both = _trusting(lab.cert, rotated)
    udp_old, tls_old = _endpoint(before, UDP, None), _endpoint(before, TLS, both)
    udp_new, tls_new = _endpoint(after, UDP, None), _endpoint(after, TLS, _trusting(rotated))
    user, pw = local.username, local.password
    check = Checker(local.scope, "reload restarts listeners (port, certificate)", recorder)
    since = await asyncio.to_thread(check.snapshot)
    start = since.at

    # Phase 1: clients that come and go, and one per listener that stays across the restart.
    first = await asyncio.gather(open_many(udp_old, user, pw, 3), open_many(tls_old, user, pw, 3))
    held = [group.pop() for group in first]
    phase1 = [a for g in first for a in g]
    await asyncio.gather(*(a.echo_many(local.peer, 4, 90, i) for i, a in enumerate(phase1 + held)))
    await close_all(phase1)

    stop = asyncio.Event()
    (streamer,) = await open_many(local.listeners["udp"], user, pw, 1)
    streaming = asyncio.create_task(keep_echoing(streamer, local.peer, stop, 100, 9))
    try:
        reloaded = time.time()
        gateway.write(after)
        lab.configs["a"] = after
        tls_before = _served(gateway, "TLS", tls_new.host, tls_new.port)
        await _restarted_in_log(
            gateway,
            [
                ("UDP", udp_new.host, udp_new.port, 1),
                ("TLS", tls_new.host, tls_new.port, tls_before + 1),
            ],
        )
        udp2, tls2 = await asyncio.gather(
            open_many(udp_new, user, pw, 2), open_many(tls_new, user, pw, 2)
        )
        # The restart ended the held allocations (a UDP connection is its allocation): only
        # the two new clients per listener remain.
        why = "the restart ended the held allocation; 2 new clients"
        ended = {
            Key(fam.name, name): Expect.exact(2, why)
            for name in (UDP, TLS)
            for fam in (c.ALLOCATIONS_ACTIVE, c.CLUSTER_CONNECTIONS)
        }
        ended[Key(c.LISTENER_CONNECTIONS.name, UDP)] = Expect.exact(2, why)
        await asyncio.to_thread(check.expect_absolute, ended, after=reloaded)
        phase2 = udp2 + tls2
        await asyncio.gather(*(a.echo_many(local.peer, 5, 110, 20 + i)
                               for i, a in enumerate(phase2)))  # fmt: skip
        await close_all(phase2)
    finally:
        stop.set()
        streamed = await asyncio.gather(streaming, return_exceptions=True)
        await close_all([streamer])
        await asyncio.gather(*(a.vanish() for a in held), return_exceptions=True)
    assert not any(isinstance(r, BaseException) for r in streamed), f"echo lost: {streamed}"
    done = time.time()

    expected: dict[Key, Expect] = {}
    udp_t = tally(UDP, "udp", [*first[0], held[0], *udp2])
    tls_t = tally(TLS, "tls", [*first[1], held[1], *tls2])
    for t in (udp_t, tls_t):
        expected |= truth.counters(t) | truth.gauges(t.name, 0, "every client left", t.protocol)
    stream_t = tally(local.listeners["udp"].name, "udp", [streamer])
    assert stream_t.data.tx_packets > 0
    expected |= truth.counters(stream_t)
    counters = {k: v for k, v in expected.items() if k.family not in GAUGES}
    gauges = {k: v for k, v in expected.items() if k.family in GAUGES}
    await asyncio.to_thread(check.expect_deltas, since, counters, after=done)
    await asyncio.to_thread(check.expect_absolute, gauges, after=done)
    end = await asyncio.to_thread(check.fresh)
    await asyncio.to_thread(check.expect_no_resets, start, end, [f.name for f in c.COUNTERS])
    assert local.listener_names is not None
    await asyncio.to_thread(check.expect_series, local.listener_names)
    check.assert_all()


async def test_certificate_rotation_closes_old_connections(local: Target) -> None:
    """After a certificate rotation the TLS listener's old connections are closed, and the
    client reconnects, seeing the new certificate."""
    lab = local.lab
    assert lab is not None
    before = lab.configs["a"]
    assert isinstance(before, gw.GatewayConfig)
    (lis,) = (lis for lis in before.listeners if lis.name == TLS)
    current = SelfSigned(base64.b64decode(lis.cert_b64), base64.b64decode(lis.key_b64))
    rotated = self_signed(lab.address["a"])
    both = Endpoint(TLS, "tls", before.address, lis.port, _trusting(current, rotated))
    (alloc,) = await open_many(both, local.username, local.password, 1)
    after = copy.deepcopy(before)
    for spec in after.listeners:
        if spec.name == TLS:
            spec.cert_b64, spec.key_b64 = rotated.cert_b64, rotated.key_b64
    served = _served(lab.gateways["a"], "TLS", before.address, lis.port)  # restarts so far
    try:
        lab.gateways["a"].write(after)
        lab.configs["a"] = after
        closed = await _closed_within(alloc, 10.0)  # the watcher's poll, the parse, the restart
        assert closed, "the old TLS connection is still open 10 s after the rotation"
        new = Endpoint(TLS, "tls", before.address, lis.port, _trusting(rotated))
        await _restarted_in_log(lab.gateways["a"], [("TLS", new.host, new.port, served + 1)])
        again = await open_many(new, local.username, local.password, 1)
        await close_all(again)
    finally:
        await alloc.vanish()


async def _closed_within(alloc: Allocation, timeout: float) -> bool:
    receiver = alloc._receiver
    assert receiver is not None
    try:
        await asyncio.wait_for(asyncio.shield(receiver.closed), timeout)
    except TimeoutError:
        return False
    return True
