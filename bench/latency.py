"""Added latency: the round trip through the relay under a background load, and the floor.

A probe sends ``count`` numbered 100 B ChannelData messages over one allocation (channel bound
to the echo peer), one at a time, and waits for each echo: client -> relay -> peer -> relay ->
client. The same probe straight to the echo peer (no relay) is the floor, so the relay's added
latency is the difference. The background load is paced uclient traffic at half of the
server's knee; the probe runs in the bench, on the load core.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stunner.stun import CHANNEL_MIN

PROBE_SIZE = 100
PROBE_TIMEOUT = 0.2  # an echo later than this counts as lost


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``pct``% of values at or
    below it. None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def percentile_ms(values: Sequence[float], pct: float) -> float | None:
    """``percentile`` of values in seconds, in ms to the microsecond."""
    value = percentile(values, pct)
    return None if value is None else round(1000 * value, 3)


def channel_data(channel: int, payload: bytes) -> bytes:
    return struct.pack("!HH", channel, len(payload)) + payload


def probe_payload(seq: int, size: int = PROBE_SIZE) -> bytes:
    return struct.pack("!I", seq).ljust(size, b"p")


@dataclass
class Probe:
    """Round-trip times in seconds, and how many probes got no echo in time."""

    rtts: list[float] = field(default_factory=list)
    lost: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "count": len(self.rtts),
            "lost": self.lost,
            "p50_ms": percentile_ms(self.rtts, 50),
            "p99_ms": percentile_ms(self.rtts, 99),
        }


def pooled(probes: Sequence[Probe]) -> Probe:
    """The probes of several rounds as one sample: their percentiles come from every probe."""
    return Probe([rtt for p in probes for rtt in p.rtts], sum(p.lost for p in probes))


def spread(samples: Sequence[Sequence[float]], pct: float) -> tuple[float, float] | None:
    """(lowest, highest) ``pct``-th percentile among the rounds' samples, in ms; None if no
    round has a value. How far one round's figure can be from another's."""
    values = [v for v in (percentile_ms(s, pct) for s in samples) if v is not None]
    return (min(values), max(values)) if values else None


def probe(
    sock: socket.socket,
    target: tuple[str, int],
    count: int,
    rate: float,
    channel: int | None = CHANNEL_MIN,
) -> Probe:
    """``count`` probes at most ``rate`` a second, one in flight; ``channel`` None: plain UDP."""
    result = Probe()
    sock.setblocking(True)
    interval = 1.0 / rate
    header = 4 if channel is not None else 0
    for seq in range(count):
        payload = probe_payload(seq)
        wire = channel_data(channel, payload) if channel is not None else payload
        sent_at = time.perf_counter()
        sock.sendto(wire, target)
        deadline = sent_at + PROBE_TIMEOUT
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                result.lost += 1
                break
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                result.lost += 1
                break
            if data[header : header + 4] == payload[:4]:
                result.rtts.append(time.perf_counter() - sent_at)
                break  # anything else is a late echo of an earlier probe
        pause = sent_at + interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return result


def floor(peer: tuple[str, int], host: str, count: int, rate: float) -> Probe:
    """The same probe straight to the echo peer: what the relay's latency adds to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return probe(sock, peer, count, rate, channel=None)
