"""A paced load at a chosen offered rate, measured in its plateau, on pinned cores.

uclient with ``-z 1`` sends one ChannelData message per client per millisecond timer tick, so
``-m M`` clients offer about ``M x 1,000`` messages/s; the bench does not trust that formula and
measures what was sent. uclient sets its allocations up one after another (about 0.1 s each) and
starts each client 1-6 s after its allocation, so the load ramps up for several seconds: the
clients are split over several uclient processes (``CLIENTS_PER_UCLIENT`` each, set up in
parallel), and the step is measured only in its plateau, the progress intervals (uclient prints
its totals every second) whose send rate is at least ``PLATEAU_FRACTION`` of the highest. Each
process's plateau is measured on its own intervals and the rates are summed:

    offered = sum of messages sent in the plateau / its seconds, over the uclient processes;
    loss = 1 - echoes received / messages sent, in the same intervals.

The step ends ``RAMP_S + plateau_s`` after the first datagram reaches the peer (uclient is told
to send for longer, and is ended by PID). The busy time of every core (``/proc/stat``) over
the plateau, and the generator's own CPU time, tell whether the load side, not the server,
was the limit.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from testkit.echo import EchoProcess

from . import child, procstat
from .load import LoadSpec, Measured, parse_progress, uclient_argv

CLIENTS_PER_UCLIENT = 25
PER_CLIENT_RATE = 1000  # messages/s one uclient client is asked to send with -z 1
PLATEAU_FRACTION = 0.9
RAMP_S = 7.0  # first datagram to the last client started, with margin
SETUP_TIMEOUT_S = 30.0
SAMPLE_S = 0.1
GENERATOR_BUSY = 0.9  # generator CPU above this share of a core: it, not the server, may limit
SHORTFALL = 0.9  # offered below this share of the intended rate: the generator could not
SHARED_CORE = 0.25  # server core busier than the server by this much: someone else ran there


Point = tuple[float, int, int]  # (time, messages sent, echoes received) from one progress line


@dataclass(frozen=True)
class Plateau:
    seconds: float
    sent: int
    received: int


def plateau(points: list[Point], fraction: float = PLATEAU_FRACTION) -> Plateau | None:
    """The progress intervals whose send rate is at least ``fraction`` of the highest one.

    Intervals are between consecutive progress lines; the first point is the zero before any
    traffic. None when there are fewer than two intervals with traffic."""
    intervals = [
        (b[0] - a[0], b[1] - a[1], b[2] - a[2])
        for a, b in itertools.pairwise(points)
        if b[0] > a[0]
    ]
    rates = [sent / dt for dt, sent, _ in intervals]
    if sum(1 for r in rates if r > 0) < 2:
        return None
    top = max(rates)
    kept = [iv for iv, rate in zip(intervals, rates, strict=True) if rate >= fraction * top]
    return Plateau(
        round(sum(iv[0] for iv in kept), 6), sum(iv[1] for iv in kept), sum(iv[2] for iv in kept)
    )


def combine(plateaus: list[Plateau]) -> tuple[float, float]:
    """(offered messages/s, loss %) of processes that ran side by side: rates add up."""
    if not plateaus:
        return 0.0, 0.0
    offered = sum(p.sent / p.seconds for p in plateaus if p.seconds > 0)
    sent = sum(p.sent for p in plateaus)
    received = sum(p.received for p in plateaus)
    loss = 100.0 * max(sent - received, 0) / sent if sent else 0.0
    return offered, loss


def clients_for(rate: float) -> int:
    """uclient clients (at -z 1) for an offered ``rate`` in messages/s."""
    return max(1, round(rate / PER_CLIENT_RATE))


def split_clients(clients: int, per_process: int = CLIENTS_PER_UCLIENT) -> list[int]:
    """``clients`` over as few uclient processes as ``per_process`` allows, evenly."""
    processes = math.ceil(clients / per_process)
    base, extra = divmod(clients, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def parse_cpu_lines(text: str) -> dict[int, tuple[int, int]]:
    """Per core (busy, total) jiffies from ``/proc/stat``; idle and iowait are not busy."""
    out = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]  # user..steal; guest is inside user
            idle = ticks[3] + ticks[4]
            out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def core_times() -> dict[int, tuple[int, int]]:
    with open("/proc/stat") as f:
        return parse_cpu_lines(f.read())


def core_busy(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[int, float]:
    """Busy share of each core between two ``core_times`` snapshots."""
    out = {}
    for core, (busy, total) in after.items():
        b0, t0 = before.get(core, (busy, total))
        out[core] = (busy - b0) / (total - t0) if total > t0 else 0.0
    return out


@dataclass
class Step:
    """One offered rate against one server, measured in the plateau."""

    server: str
    intended: float  # messages/s asked of uclient
    clients: int
    offered: float = 0.0  # messages/s uclient sent in the plateau
    loss_pct: float = 0.0
    plateau_s: float = 0.0
    server_cpu: float = 0.0  # server CPU-seconds per second in the plateau
    generator_cpu: float = 0.0  # uclient processes' + echo peer's CPU-seconds per second
    load_core_busy: float = 0.0
    server_core_busy: float = 0.0
    rcvbuf_errors: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    error: str = ""
    argv: list[str] = field(default_factory=list, repr=False)  # the first uclient's

    @property
    def server_core_shared(self) -> bool:
        """Other processes (not the server) kept the server's core busy: a noisy step."""
        return self.server_core_busy - self.server_cpu > SHARED_CORE

    @property
    def generator_bound(self) -> bool:
        """uclient and the echo peer used most of a core, or uclient could not send what was
        asked. (The load core's busy share is not used: on a shared machine other work fills
        it without holding the generator back; a starved generator shows as a shortfall.)"""
        return self.generator_cpu >= GENERATOR_BUSY or self.offered < SHORTFALL * self.intended

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["argv"]
        for key in ("offered", "loss_pct", "server_cpu", "generator_cpu", "load_core_busy",
                    "server_core_busy"):  # fmt: skip
            out[key] = round(out[key], 3)
        out["generator_bound"] = self.generator_bound
        out["server_core_shared"] = self.server_core_shared
        return out


class _Reader:
    """uclient's progress lines, timestamped, from a thread."""

    def __init__(self, proc: subprocess.Popen[str], argv: list[str]) -> None:
        self.argv = argv
        self.pid = proc.pid
        self.points: list[Point] = [(time.monotonic(), 0, 0)]
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress = parse_progress(line)
            if progress is not None:
                self.points.append((time.monotonic(), *progress))

    def join(self) -> None:
        self._thread.join(timeout=5)


def classify_drops(
    drops: dict[tuple[str, int], int], server: Measured, peer: tuple[str, int]
) -> dict[str, int]:
    """Per-socket UDP drops (``/proc/net/udp``) grouped by who owns the socket."""
    out = {"server listener": 0, "server relays": 0, "peer": 0, "clients": 0}
    for (host, port), count in drops.items():
        if (host, port) == (server.host, server.port):
            out["server listener"] += count
        elif host == server.host:
            out["server relays"] += count
        elif (host, port) == peer:
            out["peer"] += count
        elif host.startswith("127.0.2."):
            out["clients"] += count
    return out


def parse_proc_net_udp(text: str) -> dict[tuple[str, int], int]:
    """``drops`` (last column) per local IPv4 address of ``/proc/net/udp``."""
    out: dict[tuple[str, int], int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        hex_host, hex_port = fields[1].split(":")
        raw = bytes.fromhex(hex_host)[::-1]  # little-endian on the machines this runs on
        key = (".".join(str(b) for b in raw), int(hex_port, 16))
        out[key] = out.get(key, 0) + int(fields[-1])
    return out


def socket_drops() -> dict[tuple[str, int], int]:
    with open("/proc/net/udp") as f:
        return parse_proc_net_udp(f.read())


def drop_delta(
    before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Drops that happened between two snapshots (sockets opened in between count from 0)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


@contextlib.contextmanager
def uclients(
    server: Measured,
    creds: tuple[str, str],
    echo: EchoProcess,
    rate: float,
    seconds: float,
    hosts: list[str],
    size: int = 100,
) -> Iterator[list[_Reader]]:
    """uclient processes offering ``rate`` for about ``seconds`` after the ramp; yields once
    their traffic has ramped up (``RAMP_S`` after the first datagram), ends them by PID after.
    Raises RuntimeError if no traffic reaches the peer in ``SETUP_TIMEOUT_S``."""
    messages = int(PER_CLIENT_RATE * (RAMP_S + seconds + 3))
    procs: list[tuple[subprocess.Popen[str], _Reader]] = []
    peer0 = echo.counts().packets
    try:
        for host, count in zip(hosts, split_clients(clients_for(rate)), strict=False):
            argv = uclient_argv(
                server, creds, echo.address, LoadSpec(count, size, messages, 1), host
            )
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            procs.append((proc, _Reader(proc, argv)))
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while echo.counts().packets == peer0:
            if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
                raise RuntimeError("no traffic reached the peer")
            time.sleep(SAMPLE_S)
        time.sleep(RAMP_S)
        yield [reader for _, reader in procs]
    finally:
        for proc, reader in procs:
            child.stop(proc, timeout=5)
            reader.join()


def run_step(
    server: Measured,
    creds: tuple[str, str],
    echo: EchoProcess,
    rate: float,
    plateau_s: float,
    hosts: list[str],
    cores: tuple[set[int], set[int]],
    size: int = 100,
) -> Step:
    """Offer ``rate`` messages/s to ``server`` for ``plateau_s`` after the ramp; measure it."""
    step = Step(server.name, rate, clients_for(rate))
    udp0, drops0 = procstat.udp_counters(), socket_drops()
    try:
        with uclients(server, creds, echo, rate, plateau_s, hosts, size) as readers:
            step.argv = readers[0].argv
            pids = [echo.pid, *(reader.pid for reader in readers)]
            cores0, cpu0, t0 = core_times(), server.cpu_times(), time.monotonic()
            gen0 = sum(procstat.cpu_seconds(pid) for pid in pids)
            time.sleep(plateau_s)
            cores1, cpu1, t1 = core_times(), server.cpu_times(), time.monotonic()
            gen1 = sum(procstat.cpu_seconds(pid) for pid in pids)
            udp1, drops1 = procstat.udp_counters(), socket_drops()  # before uclient's go
    except RuntimeError as exc:
        step.error = str(exc)
        return step
    busy = core_busy(cores0, cores1)
    server_cores, load_cores = cores
    step.load_core_busy = max(busy.get(c, 0.0) for c in load_cores)
    step.server_core_busy = max(busy.get(c, 0.0) for c in server_cores)
    step.server_cpu = (sum(cpu1) - sum(cpu0)) / (t1 - t0)
    step.generator_cpu = (gen1 - gen0) / (t1 - t0)
    # Only the intervals inside the measured plateau: the ramp and the tail stay outside.
    found = [
        plateau([pt for pt in reader.points if t0 - 1.0 <= pt[0] <= t1 + 0.5]) for reader in readers
    ]
    measured = [p for p in found if p is not None]
    if len(measured) < len(found):
        step.error = "a uclient printed too few progress lines in the plateau"
    step.offered, step.loss_pct = combine(measured)
    step.plateau_s = min((p.seconds for p in measured), default=0.0)
    step.rcvbuf_errors = udp1["RcvbufErrors"] - udp0["RcvbufErrors"]
    step.drops = classify_drops(drop_delta(drops0, drops1), server, echo.address)
    return step
