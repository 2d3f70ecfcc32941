"""One measured load: turnutils_uclient through a server to the counting echo peer.

uclient (coturn 4.6) sends ChannelData (``-s`` would switch to Send indications), up to 50
messages per client per 1 ms timer tick with ``-z 0``, and starts each client 1-6 s after its
allocation. While it runs the bench samples, every ``SAMPLE_PERIOD``, the server's CPU time and
the peer's count. The window runs from the last sample before the first datagram reaches the
peer to the first sample after the last one, so allocation set-up and teardown stay outside
while every relayed datagram is inside:

    relayed = datagrams the peer received (client to peer) + echoes uclient received (peer to
              client); datagrams per CPU-second = relayed / server CPU time in the window.

With any loss uclient would wait 10 s before exiting; once the peer has been quiet for
``QUIET`` seconds and uclient has printed a progress line after that, the bench ends it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from testkit.echo import EchoProcess

from . import child, procstat

UCLIENT = "turnutils_uclient"
SAMPLE_PERIOD = 0.1
QUIET = 0.5
UCLIENT_BURST_RATE = 11_000  # messages/s one client sends with -z 0 (50 per ~4.5 ms tick)
_PROGRESS = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_FAILURE = re.compile(r"error \d+ \([^)]*\)|ERROR[^\n]*|Cannot[^\n]*", re.I)


TRANSPORTS = ("udp", "tcp", "tls")


class Measured(Protocol):
    """What the bench needs from a server: a name, its addresses, and its CPU time."""

    name: str
    host: str
    port: int
    tls_port: int | None

    def cpu_times(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class LoadSpec:
    """uclient's ``-m`` (allocations), ``-l`` (payload bytes), ``-n`` and ``-z``, and the
    client leg's transport: ``udp``, ``tcp`` (``-t``) or ``tls`` (``-t -S``). The relay leg
    to the peer is UDP in every case."""

    allocations: int
    size: int
    messages: int  # per client
    interval_ms: int = 0
    transport: str = "udp"

    def send_seconds(self) -> float:
        """How long one client takes to send its messages."""
        if self.interval_ms == 0:
            return self.messages / UCLIENT_BURST_RATE
        return self.messages * self.interval_ms / 1000


@dataclass(frozen=True)
class Sample:
    t: float
    user: float
    sys: float
    peer_rx: int

    @property
    def cpu(self) -> float:
        return self.user + self.sys


@dataclass
class LoadResult:
    """One server under one load; the derived rates are properties (and in ``to_json``)."""

    server: str
    allocations: int
    size: int
    messages: int
    interval_ms: int
    transport: str = "udp"
    sent: int = 0
    client_rx: int = 0
    peer_rx: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    rcvbuf_errors: int = 0  # UDP receive-buffer drops in this network namespace during the run
    error: str = ""
    argv: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.cpu_s > 0 and self.peer_rx > 0

    @property
    def relayed(self) -> int:
        return self.peer_rx + self.client_rx

    @property
    def loss(self) -> int:
        return max(self.sent - self.client_rx, 0)

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.loss / self.sent if self.sent else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.relayed / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def per_wall_s(self) -> float:
        return self.relayed / self.window_s if self.window_s > 0 else 0.0

    @property
    def cpu_util(self) -> float:
        return self.cpu_s / self.window_s if self.window_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            ok=self.ok,
            relayed=self.relayed,
            loss=self.loss,
            loss_pct=round(self.loss_pct, 3),
            per_cpu_s=round(self.per_cpu_s, 1),
            per_wall_s=round(self.per_wall_s, 1),
            cpu_util=round(self.cpu_util, 3),
        )
        return out


def sample(server: Measured, echo: EchoProcess) -> Sample:
    user, system = server.cpu_times()
    return Sample(time.monotonic(), user, system, echo.counts().packets)


def parse_progress(line: str) -> tuple[int, int] | None:
    """(messages sent, messages received) from a uclient progress or summary line."""
    match = _PROGRESS.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def window(samples: list[Sample]) -> tuple[Sample, Sample] | None:
    """The samples bracketing the traffic: last one before it, first one after it."""
    if len(samples) < 2 or samples[-1].peer_rx == samples[0].peer_rx:
        return None
    before = samples[0].peer_rx
    final = samples[-1].peer_rx
    start = max(i for i, s in enumerate(samples) if s.peer_rx == before)
    end = min(i for i, s in enumerate(samples) if s.peer_rx == final)
    return samples[start], samples[end]


def uclient_argv(
    server: Measured,
    creds: tuple[str, str],
    peer: tuple[str, int],
    spec: LoadSpec,
    local_host: str | None = None,
) -> list[str]:
    binary = shutil.which(UCLIENT)
    if binary is None:
        raise FileNotFoundError(UCLIENT)
    local = ["-L", local_host] if local_host else []
    port, transport = server.port, {"udp": [], "tcp": ["-t"], "tls": ["-t", "-S"]}
    if spec.transport == "tls":
        if server.tls_port is None:
            raise ValueError(f"{server.name} serves no TLS (is openssl installed?)")
        port = server.tls_port
    return [
        binary,
        *local,
        *transport[spec.transport],  # uclient does not verify a TLS server's certificate
        "-u", creds[0],
        "-w", creds[1],
        "-p", str(port),
        "-e", peer[0],
        "-r", str(peer[1]),
        "-m", str(spec.allocations),
        "-n", str(spec.messages),
        "-l", str(spec.size),
        "-z", str(spec.interval_ms),
        "-c",  # no RTCP allocation
        server.host,
    ]  # fmt: skip


class _Output:
    """Collects uclient's output in a thread; remembers the latest progress and its time."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.progress: tuple[int, int] | None = None
        self.progress_at = 0.0
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            progress = parse_progress(line)
            if progress is not None:
                self.progress = progress
                self.progress_at = time.monotonic()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def failure(self) -> str:
        text = "".join(self.lines)
        match = _FAILURE.search(text)
        return match.group(0).strip() if match else text.strip()[-300:]


def run_load(
    server: Measured,
    creds: tuple[str, str],
    echo: EchoProcess,
    spec: LoadSpec,
    *,
    local_host: str | None = None,
    on_traffic: Callable[[], None] | None = None,
    on_quiet: Callable[[], None] | None = None,
) -> LoadResult:
    """Run uclient once against ``server`` and measure the traffic window (see module doc)."""
    result = LoadResult(
        server.name, spec.allocations, spec.size, spec.messages, spec.interval_ms, spec.transport
    )
    argv = uclient_argv(server, creds, echo.address, spec, local_host)
    result.argv = argv
    total = spec.allocations * spec.messages
    timeout = 30.0 + spec.allocations * 0.05 + 3 * spec.send_seconds()
    udp_before = procstat.udp_counters()
    samples = [sample(server, echo)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    output = _Output(proc)
    deadline = samples[0].t + timeout
    quiet_since: float | None = None
    traffic = False
    try:
        while True:
            time.sleep(SAMPLE_PERIOD)
            now = sample(server, echo)
            moved = now.peer_rx != samples[-1].peer_rx
            samples.append(now)
            if moved and not traffic:
                traffic = True
                if on_traffic is not None:
                    on_traffic()
            if proc.poll() is not None:
                break
            all_sent = output.progress is not None and output.progress[0] >= total
            if traffic and all_sent and not moved:
                quiet_since = quiet_since or now.t
                if now.t - quiet_since >= QUIET and output.progress_at > quiet_since + QUIET:
                    break
            else:
                quiet_since = None
            if now.t > deadline:
                result.error = f"timeout after {timeout:.0f}s"
                break
    finally:
        if on_quiet is not None and traffic:
            on_quiet()
        child.stop(proc, timeout=5)
        output.join()
    # A last sample: the peer may have seen a straggler after uclient stopped.
    samples.append(sample(server, echo))
    udp_after = procstat.udp_counters()
    result.rcvbuf_errors = udp_after["RcvbufErrors"] - udp_before["RcvbufErrors"]
    if output.progress is not None:
        result.sent, result.client_rx = output.progress
    bracket = window(samples)
    if bracket is None:
        result.error = result.error or f"no traffic reached the peer: {output.failure()}"
        return result
    start, end = bracket
    result.peer_rx = end.peer_rx - start.peer_rx
    result.window_s = end.t - start.t
    result.cpu_s = end.cpu - start.cpu
    if proc.returncode not in (0, -15) and not result.error:
        result.error = f"uclient exited {proc.returncode}: {output.failure()}"
    return result
