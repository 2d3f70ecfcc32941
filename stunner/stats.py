"""Per-listener counters, and the sample of one listener that a scrape reads.

``ListenerStats`` holds counters only: plain integers that the data path
(stunner.turn.datapath) bumps with ``+=``; nothing here locks or allocates. One object lives as
long as its listener's name is configured, so counters survive a reload that restarts the
listener's sockets. Gauges are never kept by hand: ``telemetry.listener_sample`` counts them
from the live tables when a scrape (or a worker's report) asks.
"""

from __future__ import annotations

from typing import NamedTuple

COUNTERS = (
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "connections_total",
    "cluster_rx_packets",
    "cluster_rx_bytes",
    "cluster_tx_packets",
    "cluster_tx_bytes",
    "cluster_connections_total",
)
GAUGES = ("connections", "cluster_connections", "allocations")


class ListenerStats:
    """The counters of one listener (DESIGN.md 1.2); cluster ones are per listener too."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.connections_total = 0
        self.cluster_rx_packets = 0
        self.cluster_rx_bytes = 0
        self.cluster_tx_packets = 0
        self.cluster_tx_bytes = 0
        self.cluster_connections_total = 0

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)}" for f in COUNTERS)
        return f"ListenerStats({body})"


class ListenerSample(NamedTuple):
    """Every exported value of one listener at one instant: what the Collector turns into
    series, and what a worker sends its supervisor (a list in ``FIELDS`` order)."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    connections: int = 0
    connections_total: int = 0
    cluster_rx_packets: int = 0
    cluster_rx_bytes: int = 0
    cluster_tx_packets: int = 0
    cluster_tx_bytes: int = 0
    cluster_connections: int = 0
    cluster_connections_total: int = 0
    allocations: int = 0


FIELDS: tuple[str, ...] = ListenerSample._fields
