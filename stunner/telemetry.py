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
import threading
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .stats import ListenerSample, ListenerStats
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


class RuntimeCollector:
    """Python counterparts of the spec's ``go_goroutines``, ``go_threads`` and memstats."""

    def collect(self) -> Iterator[Metric]:
        tasks = 0
        with contextlib.suppress(RuntimeError):  # scraped outside the event loop (tests)
            tasks = len(asyncio.all_tasks())
        yield GaugeMetricFamily(
            "python_asyncio_tasks", "Number of asyncio tasks that currently exist.", value=tasks
        )
        yield GaugeMetricFamily(
            "python_threads", "Number of Python threads.", value=threading.active_count()
        )
        yield GaugeMetricFamily(
            "python_memory_allocated_blocks",
            "Number of memory blocks currently allocated by the Python interpreter.",
            value=sys.getallocatedblocks(),
        )


def build_registry(source: StatsSource, runtime: bool = True) -> CollectorRegistry:
    """A private registry: connection statistics, plus process and Python runtime metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StunnerCollector(source))
    if runtime:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(RuntimeCollector())
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
