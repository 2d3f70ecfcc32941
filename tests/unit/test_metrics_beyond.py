"""Families beyond upstream's table: label grids, lifecycle counting, health, capacity, and
the worker sums (docs/metrics.md)."""

from __future__ import annotations

import os
import platform

from prometheus_client import CollectorRegistry

from stunner import __version__
from stunner.capacity import CapacityCollector
from stunner.config import from_dict
from stunner.processes import ProcessTreeCollector, os_threads
from stunner.readiness import ReadinessCollector, ReloadStatus
from stunner.stats import ListenerSample, ListenerStats, add_values, response_slot
from stunner.stun import Method
from stunner.telemetry import StunnerCollector, listener_sample
from stunner.turn import Allocation, DatagramClient, DeleteReason
from stunner.turn.answers import REASONS
from stunner.turn.datapath import AllocationCounter
from tests.support import numbered_sample


def _registry(*collectors: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return registry


def test_every_error_code_the_server_answers_has_a_series() -> None:
    stats = ListenerStats()
    for code in REASONS:
        stats.responses[response_slot(Method.CHANNEL_BIND, code)] += 1
    stats.responses[response_slot(Method.ALLOCATE, 0)] += 2  # success
    stats.responses[response_slot(0x0ABC, 400)] += 1  # unknown method: "other"
    sample = listener_sample(stats, (), 0)
    get = _registry(StunnerCollector(lambda: [("l", sample)])).get_sample_value
    for code in REASONS:
        labels = {"name": "l", "method": "channel_bind", "code": str(code)}
        assert get("stunner_turn_responses_total", labels) == 1, code
    assert get("stunner_turn_responses_total", {"name": "l", "method": "allocate", "code": "200"})
    assert get("stunner_turn_responses_total", {"name": "l", "method": "other", "code": "400"})
    assert (
        get("stunner_turn_responses_total", {"name": "l", "method": "binding", "code": "200"}) == 0
    )


def test_lifecycle_counts_reasons_and_lifetimes() -> None:
    now = [100.0]
    stats = ListenerStats()
    counter = AllocationCounter(stats, clock=lambda: now[0])
    ended = [
        (0.5, DeleteReason.REFRESH0),
        (5.0, DeleteReason.EXPIRED),
        (40000, DeleteReason.SHUTDOWN),
    ]
    for lived, reason in ended:
        alloc = Allocation(DatagramClient(None, ("127.0.0.1", 1)), "u")  # type: ignore[arg-type]
        counter.created(alloc)
        now[0] += lived
        counter.deleted(alloc, reason)
    get = _registry(
        StunnerCollector(lambda: [("l", listener_sample(stats, (), 0))])
    ).get_sample_value
    deleted = {
        reason.value: get(
            "stunner_allocations_deleted_total", {"name": "l", "reason": reason.value}
        )
        for reason in DeleteReason
    }
    assert deleted == {
        "refresh0": 1,
        "expired": 1,
        "connection_closed": 0,
        "listener_removed": 0,
        "shutdown": 1,
    }
    bucket = "stunner_allocation_duration_seconds_bucket"
    assert get(bucket, {"name": "l", "le": "1.0"}) == 1
    assert get(bucket, {"name": "l", "le": "5.0"}) == 2  # a bound is inclusive (le)
    assert get(bucket, {"name": "l", "le": "21600.0"}) == 2
    assert get(bucket, {"name": "l", "le": "+Inf"}) == 3
    assert get("stunner_allocation_duration_seconds_sum", {"name": "l"}) == 40005.5
    assert stats.connections_total == stats.cluster_connections_total == 3


def test_worker_sums_add_sequences_item_by_item() -> None:
    a, b = numbered_sample(1), numbered_sample(100)
    total = ListenerSample(*(add_values(x, y) for x, y in zip(a, b, strict=True)))
    assert list(total.dropped_packets) == [
        x + y for x, y in zip(a.dropped_packets, b.dropped_packets, strict=True)
    ]
    assert total.duration_sum == a.duration_sum + b.duration_sum
    assert total.rx_packets == 101


def test_health_families_draining_and_build_info() -> None:
    draining = [False]
    reload = ReloadStatus()
    get = _registry(
        ReadinessCollector(reload, lambda: [("l", None), ("m", "port taken")], lambda: draining[0])
    ).get_sample_value
    assert get("stunner_listener_ready", {"name": "l"}) == 1
    assert get("stunner_listener_ready", {"name": "m"}) == 0
    assert get("stunner_draining") == 0
    draining[0] = True
    assert get("stunner_draining") == 1
    info = {"version": __version__, "python": platform.python_version()}
    assert get("stunner_build_info", info) == 1


def test_capacity_from_the_running_config() -> None:
    config = from_dict(
        {
            "version": "v1alpha1",
            "admin": {
                "name": "t",
                "user_quota": 3,
                "limits": {"allocations_total": 100, "allocations_per_listener": 10},
            },
            "auth": {"type": "plaintext", "credentials": {"username": "u", "password": "p"}},
            "listeners": [
                {
                    "name": "l",
                    "protocol": "UDP",
                    "port": 3478,
                    "min_relay_port": 40000,
                    "max_relay_port": 40999,
                }
            ],
        }
    )
    get = _registry(CapacityCollector(lambda: config, processes=2)).get_sample_value
    assert get("stunner_allocation_quota_per_user") == 3
    assert get("stunner_allocations_limit") == 200
    assert get("stunner_listener_allocations_limit", {"name": "l"}) == 20
    assert get("stunner_listener_relay_ports", {"name": "l"}) == 1000
    empty = _registry(CapacityCollector(lambda: None)).get_sample_value
    assert empty("stunner_allocations_limit") == 50000  # the default, before any config


def test_process_tree_sums_this_process_and_its_workers() -> None:
    me = os.getpid()
    alone = _registry(ProcessTreeCollector(lambda: [])).get_sample_value
    doubled = _registry(ProcessTreeCollector(lambda: [me])).get_sample_value
    own_fds = len(os.listdir("/proc/self/fd"))
    assert alone("process_open_fds") is not None
    assert doubled("process_max_fds") == 2 * alone("process_max_fds")  # type: ignore[operator]
    assert doubled("python_threads") == 2 * os_threads()
    assert doubled("process_resident_memory_bytes") > alone("process_resident_memory_bytes")  # type: ignore[operator]
    assert abs(doubled("process_open_fds") - 2 * own_fds) <= 4  # type: ignore[operator]
    gone = _registry(ProcessTreeCollector(lambda: [2**22 + 7])).get_sample_value  # no such pid
    assert gone("process_max_fds") == alone("process_max_fds")  # a vanished worker adds nothing
