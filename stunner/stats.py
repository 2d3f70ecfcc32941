"""Per-listener counters, and the sample of one listener that a scrape reads.

``ListenerStats`` holds counters only: plain integers that the data path
(stunner.turn.datapath) bumps with ``+=``; nothing here locks or allocates. One object lives as
long as its listener's name is configured, so counters survive a reload that restarts the
listener's sockets. Gauges are never kept by hand: ``telemetry.listener_sample`` counts them
from the live tables when a scrape (or a worker's report) asks.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple


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

# Answers by TURN method and code (docs/metrics.md, "Answers"): a fixed grid, so the label set
# is bounded. Requests of any other method fold into "other"; "200" stands for every success.
RESPONSE_METHODS: tuple[str, ...] = (
    "binding",
    "allocate",
    "refresh",
    "create_permission",
    "channel_bind",
    "other",
)
_METHOD_SLOT = {0x001: 0, 0x003: 1, 0x004: 2, 0x008: 3, 0x009: 4}  # stun.Method values
RESPONSE_CODES: tuple[int, ...] = (
    200, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 486, 500, 508,
)  # fmt: skip
_CODE_SLOT = {code: i for i, code in enumerate(RESPONSE_CODES)}


def response_slot(method: int, code: int) -> int:
    """The index of (method, code) in ``ListenerStats.responses``; 0 as code means success.
    A code outside the grid (none is produced today) counts as 500, a server error."""
    row = _METHOD_SLOT.get(method, len(RESPONSE_METHODS) - 1)
    return row * len(RESPONSE_CODES) + _CODE_SLOT.get(code or 200, _CODE_SLOT[500])


# Why an allocation ended: the values of turn.events.DeleteReason, in this order.
DELETE_REASONS: tuple[str, ...] = (
    "refresh0",
    "expired",
    "connection_closed",
    "listener_removed",
    "shutdown",
)
# Allocation lifetimes (seconds): from a failed call to a long meeting.
DURATION_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600)

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
GAUGES = ("connections", "cluster_connections", "allocations", "serving")


class ListenerStats:
    """The counters of one listener (DESIGN.md 1.2); cluster ones are per listener too."""

    __slots__ = (
        *COUNTERS,
        "deleted",
        "dropped_bytes",
        "dropped_packets",
        "duration_buckets",
        "duration_sum",
        "responses",
    )

    def __init__(self) -> None:
        self.dropped_packets = [0] * len(Drop)  # indexed by Drop
        self.dropped_bytes = [0] * len(Drop)
        self.responses = [0] * (len(RESPONSE_METHODS) * len(RESPONSE_CODES))  # response_slot
        self.deleted = [0] * len(DELETE_REASONS)  # indexed like DELETE_REASONS
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative
        self.duration_sum = 0.0
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
    # Beyond upstream (docs/metrics.md): counters kept as sequences, summed item by item.
    dropped_packets: tuple[int, ...] = (0,) * len(Drop)
    dropped_bytes: tuple[int, ...] = (0,) * len(Drop)
    responses: tuple[int, ...] = (0,) * (len(RESPONSE_METHODS) * len(RESPONSE_CODES))
    deleted: tuple[int, ...] = (0,) * len(DELETE_REASONS)
    duration_buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    duration_sum: float = 0.0
    serving: int = 0  # 1 while the listener serves in this process (summed: how many serve)


FIELDS: tuple[str, ...] = ListenerSample._fields
SPEC_FIELDS = FIELDS[: FIELDS.index("allocations") + 1]  # the spec's table (DESIGN.md 1.2)


def add_values(a: Any, b: Any) -> Any:
    """One field of two samples summed (a number, or a sequence item by item): how the
    supervisor adds up its workers' samples."""
    if isinstance(a, (list, tuple)):
        return [x + y for x, y in zip(a, b, strict=True)]
    return a + b
