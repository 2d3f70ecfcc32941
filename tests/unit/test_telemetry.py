"""The Collector on a fresh registry: names, types, labels, HELP strings, exact values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from stunner.stats import SPEC_FIELDS, ListenerSample, ListenerStats
from stunner.telemetry import FAMILIES, StunnerCollector, build_registry, listener_sample
from stunner.turn import Allocation, DatagramClient, StreamClient
from tests.support import numbered_sample

EXPECTED_HELP = {
    "stunner_listener_connections": "Number of active downstream connections at a listener.",
    "stunner_listener_connections_total": "Number of downstream connections at a listener.",
    "stunner_listener_packets_total": "Number of datagrams sent or received at a listener.",
    "stunner_listener_bytes_total": "Number of bytes sent or received at a listener.",
    "stunner_cluster_connections": "Number of active upstream connections on behalf of a listener",
    "stunner_cluster_connections_total": "Number of upstream connections on behalf of a listener.",
    "stunner_cluster_packets_total": (
        "Number of datagrams sent to backends or received from backends on behalf of a listener"
    ),
    "stunner_cluster_bytes_total": (
        "Number of bytes sent to backends or received from backends on behalf of a listener."
    ),
    "stunner_allocations_active": "Number of active allocations.",
}


def numbered_stats(offset: int) -> ListenerSample:
    sample: ListenerSample = numbered_sample(offset)
    return sample


def test_families_types_help_and_values() -> None:
    a, b = numbered_stats(100), numbered_stats(200)
    registry = CollectorRegistry()
    registry.register(StunnerCollector(lambda: [("ns/gw/udp", a), ("ns/gw/tcp", b)]))
    text = generate_latest(registry).decode()
    for name, help_text in EXPECTED_HELP.items():
        base = name.removesuffix("_total")
        assert f"# HELP {name} {help_text}\n" in text or f"# HELP {base} {help_text}\n" in text
    types = {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")
    }
    assert {k: v for k, v in types.items() if k in EXPECTED_HELP} == {
        "stunner_listener_connections": "gauge",
        "stunner_listener_connections_total": "counter",
        "stunner_listener_packets_total": "counter",
        "stunner_listener_bytes_total": "counter",
        "stunner_cluster_connections": "gauge",
        "stunner_cluster_connections_total": "counter",
        "stunner_cluster_packets_total": "counter",
        "stunner_cluster_bytes_total": "counter",
        "stunner_allocations_active": "gauge",
    }
    get = registry.get_sample_value
    assert (
        get("stunner_listener_packets_total", {"name": "ns/gw/udp", "direction": "rx"})
        == a.rx_packets
    )
    assert (
        get("stunner_listener_packets_total", {"name": "ns/gw/udp", "direction": "tx"})
        == a.tx_packets
    )
    assert (
        get("stunner_cluster_bytes_total", {"name": "ns/gw/tcp", "direction": "rx"})
        == b.cluster_rx_bytes
    )
    assert (
        get("stunner_cluster_bytes_total", {"name": "ns/gw/tcp", "direction": "tx"})
        == b.cluster_tx_bytes
    )
    assert get("stunner_listener_connections", {"name": "ns/gw/tcp"}) == b.connections
    assert (
        get("stunner_cluster_connections_total", {"name": "ns/gw/udp"})
        == a.cluster_connections_total
    )
    assert get("stunner_allocations_active", {"name": "ns/gw/udp"}) == a.allocations
    assert "_created" not in text
    # Per listener: 5 single-series families + 4 families x 2 directions.
    series = [line for line in text.splitlines() if line.split("{")[0] in EXPECTED_HELP]
    assert len(series) == 2 * (5 + 4 * 2)


def test_every_stats_field_is_exported_once() -> None:
    used: list[str] = []
    for _, _, _, field in FAMILIES:
        used.extend(field if isinstance(field, tuple) else [field])
    assert sorted(used) == sorted(SPEC_FIELDS)


def test_new_listener_series_start_at_zero() -> None:
    registry = CollectorRegistry()
    registry.register(StunnerCollector(lambda: [("l", ListenerSample())]))
    assert (
        registry.get_sample_value("stunner_listener_bytes_total", {"name": "l", "direction": "tx"})
        == 0
    )


def test_full_registry_has_process_and_python_metrics() -> None:
    text = generate_latest(build_registry(lambda: [])).decode()
    for name in (
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "python_gc_objects_collected_total",
        "python_info",
        "python_threads",
        "python_asyncio_tasks",
        "python_memory_allocated_blocks",
    ):
        assert f"\n{name}" in text, name
    assert "_created" not in text


def test_gauges_are_counted_from_the_live_tables() -> None:
    """Allocations and cluster connections: one per allocation. Listener connections: the open
    TCP/TLS connections plus one per UDP client's allocation (a stream client's allocation
    rides on its connection, counted once)."""
    stats = ListenerStats()
    stats.rx_packets, stats.connections_total = 7, 9
    udp = [Allocation(DatagramClient(None, ("192.0.2.1", p)), "u") for p in (1, 2)]  # type: ignore[arg-type]
    tcp = [Allocation(StreamClient(None, ("192.0.2.1", 3)), "u")]  # type: ignore[arg-type]
    sample = listener_sample(stats, udp + tcp, 4)
    assert (sample.allocations, sample.cluster_connections, sample.connections) == (3, 3, 6)
    assert (sample.rx_packets, sample.connections_total) == (7, 9)
    assert listener_sample(stats, [], 0).connections == 0


def test_no_created_series_and_the_process_wide_setting_is_left_alone() -> None:
    """stunner's families carry no creation time; prometheus_client's own metrics (in other
    registries of the same process) still get their ``_created`` series."""
    from prometheus_client import Counter

    text = generate_latest(build_registry(lambda: [("l", numbered_stats(1))])).decode()
    assert "_created" not in text
    other = CollectorRegistry()
    Counter("elsewhere", "A counter of some other library.", registry=other)
    assert "elsewhere_created" in generate_latest(other).decode()
