"""Per-listener traffic counters: plain integers that the data path bumps with ``+=``.

Nothing here locks or allocates; ``telemetry.StunnerCollector`` reads the fields at scrape
time. One object lives as long as its listener's name is configured, so counters survive a
reload that restarts the listener's sockets.
"""

from __future__ import annotations

FIELDS = (
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "connections",
    "connections_total",
    "cluster_rx_packets",
    "cluster_rx_bytes",
    "cluster_tx_packets",
    "cluster_tx_bytes",
    "cluster_connections",
    "cluster_connections_total",
    "allocations",
)


class ListenerStats:
    """Counters and gauges of one listener (DESIGN.md 1.2); cluster ones are per listener too."""

    __slots__ = FIELDS

    def __init__(self) -> None:
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.connections = 0
        self.connections_total = 0
        self.cluster_rx_packets = 0
        self.cluster_rx_bytes = 0
        self.cluster_tx_packets = 0
        self.cluster_tx_bytes = 0
        self.cluster_connections = 0
        self.cluster_connections_total = 0
        self.allocations = 0

    def snapshot(self) -> tuple[int, ...]:
        return tuple(getattr(self, field) for field in FIELDS)

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)}" for f in FIELDS)
        return f"ListenerStats({body})"
