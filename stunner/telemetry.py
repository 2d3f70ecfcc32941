"""Prometheus exposition: one Collector that reads the listeners' state at scrape time.

The data path never touches a prometheus_client metric object (each ``inc()`` takes a lock);
it bumps ints on ``ListenerStats``. At each scrape ``listener_sample`` reads those counters and
counts the gauges from the live tables (allocations, open connections), and
``StunnerCollector`` turns the samples into fresh families, with exactly the names, labels and
HELP strings of DESIGN.md 1.2. Families are built without a creation time, so no ``_created``
series appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .processes import ProcessTreeCollector, os_threads
from .stats import (
    DELETE_REASONS,
    DROP_REASONS,
    DURATION_BUCKETS,
    RESPONSE_CODES,
    RESPONSE_METHODS,
    ListenerSample,
    ListenerStats,
)
from .turn import Allocation, DatagramClient

StatsSource = Callable[[], Iterable[tuple[str, ListenerSample]]]


def listener_sample(
    stats: ListenerStats, allocations: Collection[Allocation], stream_connections: int
) -> ListenerSample:
    """One listener now: its counters as counted, its gauges counted from the live tables.

    Every allocation is one upstream (cluster) connection. A downstream connection is an open
    TCP/TLS connection, or a UDP client's allocation (UDP has no connection of its own).
    """
    active = len(allocations)
    udp_clients = sum(1 for alloc in allocations if isinstance(alloc.client, DatagramClient))
    return ListenerSample(
        rx_packets=stats.rx_packets,
        rx_bytes=stats.rx_bytes,
        tx_packets=stats.tx_packets,
        tx_bytes=stats.tx_bytes,
        connections=stream_connections + udp_clients,
        connections_total=stats.connections_total,
        cluster_rx_packets=stats.cluster_rx_packets,
        cluster_rx_bytes=stats.cluster_rx_bytes,
        cluster_tx_packets=stats.cluster_tx_packets,
        cluster_tx_bytes=stats.cluster_tx_bytes,
        cluster_connections=active,
        cluster_connections_total=stats.cluster_connections_total,
        allocations=active,
        dropped_packets=tuple(stats.dropped_packets),
        dropped_bytes=tuple(stats.dropped_bytes),
        responses=tuple(stats.responses),
        deleted=tuple(stats.deleted),
        duration_buckets=tuple(stats.duration_buckets),
        duration_sum=stats.duration_sum,
    )


# (metric, type, HELP as upstream v0.14-0.16 has it, sample field or (rx field, tx field))
FAMILIES: tuple[tuple[str, str, str, str | tuple[str, str]], ...] = (
    (
        "stunner_listener_connections",
        "gauge",
        "Number of active downstream connections at a listener.",
        "connections",
    ),
    (
        "stunner_listener_connections_total",
        "counter",
        "Number of downstream connections at a listener.",
        "connections_total",
    ),
    (
        "stunner_listener_packets_total",
        "counter",
        "Number of datagrams sent or received at a listener.",
        ("rx_packets", "tx_packets"),
    ),
    (
        "stunner_listener_bytes_total",
        "counter",
        "Number of bytes sent or received at a listener.",
        ("rx_bytes", "tx_bytes"),
    ),
    (
        "stunner_cluster_connections",
        "gauge",
        "Number of active upstream connections on behalf of a listener",
        "cluster_connections",
    ),
    (
        "stunner_cluster_connections_total",
        "counter",
        "Number of upstream connections on behalf of a listener.",
        "cluster_connections_total",
    ),
    (
        "stunner_cluster_packets_total",
        "counter",
        "Number of datagrams sent to backends or received from backends on behalf of a listener",
        ("cluster_rx_packets", "cluster_tx_packets"),
    ),
    (
        "stunner_cluster_bytes_total",
        "counter",
        "Number of bytes sent to backends or received from backends on behalf of a listener.",
        ("cluster_rx_bytes", "cluster_tx_bytes"),
    ),
    (
        "stunner_allocations_active",
        "gauge",
        "Number of active allocations.",
        "allocations",
    ),
)


class StunnerCollector:
    """Connection statistics of every configured listener, read when Prometheus scrapes."""

    def __init__(self, source: StatsSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._source()))

    def _families(self, listeners: list[tuple[str, ListenerSample]]) -> Iterator[Metric]:
        for name, kind, help_text, field in FAMILIES:
            if isinstance(field, tuple):
                counter = CounterMetricFamily(name, help_text, labels=("direction", "name"))
                for listener, stats in listeners:
                    counter.add_metric(("rx", listener), getattr(stats, field[0]))
                    counter.add_metric(("tx", listener), getattr(stats, field[1]))
                yield counter
            elif kind == "counter":
                counter = CounterMetricFamily(name, help_text, labels=("name",))
                for listener, stats in listeners:
                    counter.add_metric((listener,), getattr(stats, field))
                yield counter
            else:
                gauge = GaugeMetricFamily(name, help_text, labels=("name",))
                for listener, stats in listeners:
                    gauge.add_metric((listener,), getattr(stats, field))
                yield gauge
        yield from refusal_families(listeners)
        yield from lifecycle_families(listeners)


# Beyond upstream's table (docs/metrics.md, "Refusals, drops, lifecycle"): HELP strings ours.
RESPONSES = "stunner_turn_responses_total"
DROPPED_PACKETS = "stunner_dropped_packets_total"
DROPPED_BYTES = "stunner_dropped_bytes_total"
DELETED = "stunner_allocations_deleted_total"
DURATION = "stunner_allocation_duration_seconds"
_METHOD_CODES = tuple(
    (method, str(code)) for method in RESPONSE_METHODS for code in RESPONSE_CODES
)  # in response_slot order
_BUCKET_BOUNDS = (*(f"{float(b)}" for b in DURATION_BUCKETS), "+Inf")


def refusal_families(listeners: list[tuple[str, ListenerSample]]) -> Iterator[Metric]:
    """Answers by method and code, and drops by reason: every series from the start, at 0
    (a fixed grid of 6 methods by 14 codes, and 8 reasons, per listener)."""
    responses = CounterMetricFamily(
        RESPONSES,
        "Number of STUN/TURN responses sent to clients, by request method and response code.",
        labels=("name", "method", "code"),
    )
    for listener, stats in listeners:
        for (method, code), count in zip(_METHOD_CODES, stats.responses, strict=True):
            responses.add_metric((listener, method, code), count)
    yield responses
    for family, help_text, values in (
        (DROPPED_PACKETS, "Number of datagrams or frames dropped at a listener, by reason.", 0),
        (DROPPED_BYTES, "Number of bytes dropped at a listener, by reason.", 1),
    ):
        dropped = CounterMetricFamily(family, help_text, labels=("name", "reason"))
        for listener, stats in listeners:
            counts = stats.dropped_bytes if values else stats.dropped_packets
            for reason, count in zip(DROP_REASONS, counts, strict=True):
                dropped.add_metric((listener, reason), count)
        yield dropped


def lifecycle_families(listeners: list[tuple[str, ListenerSample]]) -> Iterator[Metric]:
    """Allocations ended, by reason, and how long they lived."""
    deleted = CounterMetricFamily(
        DELETED, "Number of allocations deleted, by reason.", labels=("name", "reason")
    )
    duration = HistogramMetricFamily(
        DURATION, "Lifetime of ended allocations in seconds.", labels=("name",)
    )
    for listener, stats in listeners:
        for reason, count in zip(DELETE_REASONS, stats.deleted, strict=True):
            deleted.add_metric((listener, reason), count)
        cumulative, buckets = 0, []
        for bound, count in zip(_BUCKET_BOUNDS, stats.duration_buckets, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        duration.add_metric((listener,), buckets, stats.duration_sum)
    yield deleted
    yield duration


class RuntimeCollector:
    """Python counterparts of the spec's ``go_goroutines``, ``go_threads`` and memstats.

    ``python_threads`` counts OS threads, as ``go_threads`` does; with worker processes the
    ``ProcessTreeCollector`` exports it summed instead (``threads=False`` here)."""

    def __init__(self, threads: bool = True) -> None:
        self._threads = threads

    def collect(self) -> Iterator[Metric]:
        tasks = 0
        with contextlib.suppress(RuntimeError):  # scraped outside the event loop (tests)
            tasks = len(asyncio.all_tasks())
        yield GaugeMetricFamily(
            "python_asyncio_tasks", "Number of asyncio tasks that currently exist.", value=tasks
        )
        if self._threads:
            yield GaugeMetricFamily("python_threads", "Number of OS threads.", value=os_threads())
        yield GaugeMetricFamily(
            "python_memory_allocated_blocks",
            "Number of memory blocks currently allocated by the Python interpreter.",
            value=sys.getallocatedblocks(),
        )


def build_registry(
    source: StatsSource,
    runtime: bool = True,
    workers: Callable[[], Iterable[int]] | None = None,
) -> CollectorRegistry:
    """A private registry: connection statistics, plus process and Python runtime metrics
    (summed over this process and ``workers()``, their pids, when there are workers)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StunnerCollector(source))
    if runtime:
        if workers is None:
            ProcessCollector(registry=registry)
        else:
            registry.register(ProcessTreeCollector(workers))
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(RuntimeCollector(threads=workers is None))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
