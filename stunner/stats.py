"""Per-listener counters, and the sample of one listener that a scrape reads.

``ListenerStats`` holds counters only: plain integers that the data path
(stunner.turn.datapath) bumps with ``+=``; nothing here locks or allocates. One object lives as
long as its listener's name is configured, so counters survive a reload that restarts the
listener's sockets. Gauges are never kept by hand: ``telemetry.listener_sample`` counts them
from the live tables when a scrape (or a worker's report) asks.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class Drop(IntEnum):
    """Why a datagram or frame that entered was not relayed (DESIGN.md 1.3): each drop has
    exactly one reason. The value indexes ``ListenerStats.dropped_packets``/``dropped_bytes``,
    so counting a drop is one list-item increment on the hot path."""

    NO_PERMISSION = 0  # a peer datagram (or Send) for an IP without a permission
    NO_CHANNEL = 1  # ChannelData on a channel that is not bound (or has no allocation)
    MALFORMED = 2  # not STUN, not ChannelData, or a ChannelData length that lies
    AMPLIFICATION = 3  # an unauthenticated answer the amplification guard withheld
    WRITE_BUFFER_FULL = 4  # a stream client's bounded write buffer is full
    SEND_ERROR = 5  # the kernel refused the send
    OVERSIZE = 6  # too large for the way out (e.g. a peer datagram that cannot fit ChannelData)
    OWN_LISTENER = 7  # addressed to one of stunnerd's own listener ports: never relayed

    @property
    def label(self) -> str:
        return self.name.lower()


DROP_REASONS: tuple[str, ...] = tuple(reason.label for reason in Drop)

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

    __slots__ = (*COUNTERS, "dropped_packets", "dropped_bytes")

    def __init__(self) -> None:
        self.dropped_packets = [0] * len(Drop)  # indexed by Drop
        self.dropped_bytes = [0] * len(Drop)
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
