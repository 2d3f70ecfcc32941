"""The soak: churn allocations and traffic on UDP, TCP and TLS for a bounded time, watching the
process for leaks and the counters for lies.

One stunnerd process (as users run it), one UDP echo backend, and counting TURN clients from
the e2e harness (``e2e.clients``), whose own tallies are the truth for every counter.

Each cycle opens a wave of allocations on every listener, relays a random number of
ping-pongs through each, and closes them; one long-lived allocation per listener relays
throughout. After each wave the relay is quiet (only the long-lived allocations remain): open
fds and RSS are sampled there, so samples compare like with like.

Verdicts (any failure makes the exit status 1):
- fds: at quiet points in the second half, never above the first half's maximum; at the end
  (no clients) equal to the count before the first client.
- memory: the least-squares slope of quiet-point RSS over the steady part (after the first
  quarter), projected over that part, stays under ``max(RSS_SLACK, 3% of RSS)``.
- gauges: allocations, listener and cluster connections all return to 0.
- counters: each listener's nine families equal the clients' tallies (``e2e.truth``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from aioice.stun import Method

from e2e import gateway as gw
from e2e.certs import self_signed
from e2e.clients import Allocation, EchoError, Endpoint, Tally, close_all, open_many, payload
from e2e.netutil import leased_addresses
from e2e.truth import counters
from testkit.echo import EchoThread
from testkit.ports import free_port
from testkit.wait import poll
from tests.support import samples

CLUSTER = "soak/backend"
NAMES = {"udp": "soak/udp", "tcp": "soak/tcp", "tls": "soak/tls"}
GAUGES = (
    "stunner_allocations_active",
    "stunner_listener_connections",
    "stunner_cluster_connections",
)
RSS_SLACK = 4 * 1024 * 1024
SETTLE = 15.0  # seconds for gauges to settle after a wave
PERMISSION_REFRESH = 240.0  # seconds; permissions last 300


@dataclass
class Sample:
    """One look at the process; ``quiet`` samples are taken between waves."""

    t: float
    quiet: bool
    fds: int  # /proc/<pid>/fd, outside any scrape
    rss: int  # process_resident_memory_bytes
    allocations: dict[str, int]
    listener_rx: int  # packets, all listeners
    listener_tx: int
    cluster_tx: int
    cluster_rx: int


@dataclass
class Verdict:
    check: str
    ok: bool
    detail: str


@dataclass
class Report:
    minutes: float
    cycles: int = 0
    allocations: int = 0
    samples: list[Sample] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    fds_before: int = 0
    fds_after: int = 0

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def open_fds(pid: int) -> int:
    """Descriptors of ``pid``; the least of three looks, so that a scrape connection the
    relay is just closing is not counted."""
    counts = []
    for _ in range(3):
        counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.01)
    return min(counts)


class Soak:
    def __init__(self, minutes: float, wave: int, workdir: Path, seed: int) -> None:
        self.minutes = minutes
        self.wave = wave
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.report = Report(minutes)
        self.tallies = {p: Tally(NAMES[p], p) for p in NAMES}  # type: ignore[arg-type]
        self.lost: dict[str, list[int]] = {p: [] for p in NAMES}  # payload sizes of lost echoes
        self.permission_at: dict[int, float] = {}
        self.started = 0.0

    # -- process and metrics ---------------------------------------------------------------

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(self.metrics_url, timeout=5).text
        return samples(text)

    def value(self, scraped: Any, family: str, name: str, direction: str = "") -> float:
        labels = {"name": name, **({"direction": direction} if direction else {})}
        return float(scraped.get((family, tuple(sorted(labels.items()))), -1))

    def sample(self, quiet: bool) -> Sample:
        assert self.gateway.pid is not None
        fds = open_fds(self.gateway.pid)
        scraped = self.scrape()

        def total(family: str, direction: str) -> int:
            return int(sum(self.value(scraped, family, n, direction) for n in NAMES.values()))

        sample = Sample(
            t=round(time.monotonic() - self.started, 2),
            quiet=quiet,
            fds=fds,
            rss=int(scraped[("process_resident_memory_bytes", ())]),
            allocations={
                p: int(self.value(scraped, "stunner_allocations_active", n))
                for p, n in NAMES.items()
            },
            listener_rx=total("stunner_listener_packets_total", "rx"),
            listener_tx=total("stunner_listener_packets_total", "tx"),
            cluster_tx=total("stunner_cluster_packets_total", "tx"),
            cluster_rx=total("stunner_cluster_packets_total", "rx"),
        )
        self.report.samples.append(sample)
        return sample

    def gauges_at(self, expected: int) -> bool:
        scraped = self.scrape()
        return all(
            self.value(scraped, family, name) == expected
            for family in GAUGES
            for name in NAMES.values()
        )

    # -- traffic ---------------------------------------------------------------------------

    async def relay(self, alloc: Allocation, tag: int) -> None:
        """Random ping-pongs; a lost echo is recorded and ends this allocation's traffic."""
        count = self.rng.randint(3, 15)
        size = self.rng.choice((20, 160, 480, 1200, self.rng.randint(1, 1400)))
        for seq in range(count):
            try:
                await alloc.echo(self.backend.address, payload(tag, seq, size))
            except EchoError:
                self.lost[alloc.endpoint.protocol].append(size)
                return

    async def wave_on(self, endpoint: Endpoint, tag: int) -> None:
        allocs = await open_many(endpoint, gw.USERNAME, gw.PASSWORD, self.wave)
        try:
            await asyncio.gather(*(self.relay(a, tag + i) for i, a in enumerate(allocs)))
        finally:
            await close_all(allocs)
            for alloc in allocs:  # tallied whatever happened: the truth includes failures
                self.tallies[endpoint.protocol].add(alloc)
            self.report.allocations += len(allocs)

    async def keep_alive(self, alloc: Allocation, cycle: int) -> None:
        """The long-lived allocations behave as RFC 8656 asks of a client: the permission
        (5 minutes) is refreshed with CreatePermission, which aioice does not do itself (it
        refreshes only the channel, after 500 s)."""
        now = time.monotonic()
        if now - self.permission_at.get(id(alloc), self.started) > PERMISSION_REFRESH:
            await alloc.request(
                Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": self.backend.address}
            )
            self.permission_at[id(alloc)] = now
        await alloc.echo(self.backend.address, payload(7, cycle, 100))

    async def run_waves(self, endpoints: dict[str, Endpoint]) -> None:
        long_lived = {
            p: await Allocation.open(e, gw.USERNAME, gw.PASSWORD) for p, e in endpoints.items()
        }
        deadline = self.started + self.minutes * 60
        next_line = 0.0
        try:
            while time.monotonic() < deadline:
                cycle = self.report.cycles
                waves = [self.wave_on(e, cycle * 1000) for e in endpoints.values()]
                done = asyncio.gather(*waves)
                await asyncio.sleep(0)
                for alloc in long_lived.values():  # tallied when they close, at the end
                    await self.keep_alive(alloc, cycle)
                busy = await asyncio.to_thread(self.sample, False)
                await done
                await asyncio.to_thread(self.wait_gauges, 1, "quiet gauges")
                quiet = await asyncio.to_thread(self.sample, True)
                self.report.cycles += 1
                if quiet.t >= next_line:
                    next_line = quiet.t + 15
                    say(line(quiet, busy, self.report.allocations))
        finally:
            await close_all(list(long_lived.values()))
            for p, alloc in long_lived.items():
                self.tallies[p].add(alloc)
            self.report.allocations += len(long_lived)

    # -- the whole run ---------------------------------------------------------------------

    async def main(self) -> Report:
        with leased_addresses(2) as (address, backend_address), EchoThread(backend_address) as be:
            self.backend = be
            cert = self_signed(address)
            ports = {p: free_port(address) for p in NAMES}
            metrics_port = free_port(address, udp=False)
            self.metrics_url = f"http://{address}:{metrics_port}/metrics"
            listeners = [
                gw.ListenerSpec(
                    NAMES[p],
                    p.upper(),
                    ports[p],
                    [CLUSTER],
                    *((cert.cert_b64, cert.key_b64) if p == "tls" else ()),
                )
                for p in NAMES
            ]
            config = gw.GatewayConfig(
                name="soak",
                address=address,
                health_port=free_port(address, udp=False),
                metrics_url=self.metrics_url,
                listeners=listeners,
                clusters=[gw.ClusterSpec(CLUSTER, [backend_address])],
                loglevel="all:WARNING",
            )
            self.gateway = gw.Gateway(
                "soak", address, self.workdir, self.workdir, health_port=config.health_port
            )
            self.gateway.write(config)
            self.gateway.start()
            try:
                tls = cert.client_context()
                endpoints = {
                    p: Endpoint(NAMES[p], p, address, ports[p], tls if p == "tls" else None)  # type: ignore[arg-type]
                    for p in NAMES
                }
                assert self.gateway.pid is not None
                self.report.fds_before = open_fds(self.gateway.pid)
                self.started = time.monotonic()
                first = await asyncio.to_thread(self.sample, True)
                say(header())
                say(line(first, first, 0))
                try:
                    await self.run_waves(endpoints)
                except Exception as exc:  # a lost echo or a refused allocation: a finding
                    self.report.verdicts.append(Verdict("traffic", False, repr(exc)))
                self.judge_end()
                self.judge_drift()
                echoed = be.counts()
                self.report.verdicts.append(
                    Verdict(
                        "echo backend",
                        echoed.packets == sum(t.data.tx_packets for t in self.tallies.values()),
                        f"backend saw {echoed.packets} datagrams",
                    )
                )
            finally:
                self.gateway.stop()
        return self.report

    def wait_gauges(self, value: int, what: str) -> None:
        """Until the gauges read `value`; a scrape that fails (not up yet) is retried."""
        poll(
            lambda: self.gauges_at(value),
            timeout=SETTLE,
            what=what,
            interval=0.2,
            retry_on=(Exception,),
        )

    def judge_end(self) -> None:
        try:
            self.wait_gauges(0, "gauges at 0")
            ok, detail = True, "allocations, listener and cluster connections all 0"
        except TimeoutError as exc:
            ok, detail = False, str(exc)
        self.report.verdicts.append(Verdict("gauges return to 0", ok, detail))
        self.sample(True)
        assert self.gateway.pid is not None
        self.report.fds_after = open_fds(self.gateway.pid)
        self.report.verdicts.append(
            Verdict(
                "fds back to the start",
                self.report.fds_after == self.report.fds_before,
                f"{self.report.fds_before} before the first client, "
                f"{self.report.fds_after} after the last",
            )
        )
        scraped = self.scrape()
        bad = []
        for protocol, tally in self.tallies.items():
            lost = self.lost[protocol]
            for key, expect in counters(tally).items():
                # A lost echo may or may not have been counted on each hop: widen by it.
                slack = len(lost) if "packets" in key.family else sum(s + 40 for s in lost)
                if "connections" in key.family:
                    slack = 0
                got = self.value(scraped, key.family, key.name, key.direction)
                if not expect.lo - slack <= got <= expect.hi + slack:
                    bad.append(f"{key}: expected {expect} (+-{slack}), got {got:g}")
        self.report.verdicts.append(
            Verdict(
                "counters equal the clients' counts",
                not bad,
                "; ".join(bad) or f"{len(self.tallies) * 10} series exact",
            )
        )
        losses = {p: len(sizes) for p, sizes in self.lost.items()}
        self.report.verdicts.append(
            Verdict("no echo lost", not any(losses.values()), f"lost echoes: {losses}")
        )

    def judge_drift(self) -> None:
        quiet = [s for s in self.report.samples if s.quiet]
        if len(quiet) < 8:
            self.report.verdicts.append(Verdict("drift", False, "too few quiet samples"))
            return
        half = len(quiet) // 2
        first, second = quiet[1:half], quiet[half:-1]  # skip the very first and the end one
        fd_ok = max(s.fds for s in second) <= max(s.fds for s in first)
        self.report.verdicts.append(
            Verdict(
                "fds do not drift up",
                fd_ok,
                f"quiet fds: first half max {max(s.fds for s in first)}, "
                f"second half max {max(s.fds for s in second)}",
            )
        )
        steady = quiet[len(quiet) // 4 : -1]
        slope = least_squares_slope([(s.t, float(s.rss)) for s in steady])
        span = steady[-1].t - steady[0].t
        growth = slope * span
        limit = max(RSS_SLACK, 0.03 * steady[0].rss)
        self.report.verdicts.append(
            Verdict(
                "memory does not drift up",
                growth <= limit,
                f"RSS slope {slope / 1024:.1f} KiB/s over {span:.0f} s = "
                f"{growth / 2**20:+.2f} MiB (limit {limit / 2**20:.1f} MiB)",
            )
        )


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def header() -> str:
    return (
        f"{'t(s)':>7} {'fds':>5} {'rss(MiB)':>9} {'allocs u/t/l (busy)':>20} "
        f"{'lis rx':>9} {'lis tx':>9} {'clu tx':>8} {'clu rx':>8} {'made':>7}"
    )


def line(quiet: Sample, busy: Sample, made: int) -> str:
    a = busy.allocations
    return (
        f"{quiet.t:7.1f} {quiet.fds:5d} {quiet.rss / 2**20:9.1f} "
        f"{a['udp']:>6}/{a['tcp']:>3}/{a['tls']:>3} {'':>7}"
        f"{quiet.listener_rx:9d} {quiet.listener_tx:9d} {quiet.cluster_tx:8d} "
        f"{quiet.cluster_rx:8d} {made:7d}"
    )


def summary(report: Report) -> list[str]:
    quiet = [s for s in report.samples if s.quiet]
    start, end = quiet[0], quiet[-1]
    busiest = max(report.samples, key=lambda s: sum(s.allocations.values()))
    out = [
        f"soak: {report.minutes:g} min, {report.cycles} waves, {report.allocations} allocations",
        f"  fds: {report.fds_before} before any client, {start.fds} at the first quiet point, "
        f"{end.fds} at the last, {report.fds_after} after the last client",
        f"  RSS: {start.rss / 2**20:.1f} MiB at start, {end.rss / 2**20:.1f} MiB at end, "
        f"max {max(s.rss for s in quiet) / 2**20:.1f} MiB",
        f"  allocations: peak {sum(busiest.allocations.values())} "
        f"(udp/tcp/tls {'/'.join(str(v) for v in busiest.allocations.values())}), "
        f"{sum(end.allocations.values())} at the end",
        f"  counters at the end: listener rx {end.listener_rx} tx {end.listener_tx} packets, "
        f"cluster tx {end.cluster_tx} rx {end.cluster_rx} packets",
    ]
    out += [f"  {'PASS' if v.ok else 'FAIL'}  {v.check}: {v.detail}" for v in report.verdicts]
    return out


def write(report: Report, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=1))
