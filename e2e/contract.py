"""The metric contract the harness checks (DESIGN.md 1.2), written down independently.

The harness must not import these from stunner.telemetry: a check that reads its expectation
from the code under test cannot fail.
"""

from __future__ import annotations

from dataclasses import dataclass

RX, TX = "rx", "tx"
DIRECTIONS = (RX, TX)


@dataclass(frozen=True)
class Family:
    """One metric family: exposition name, type, HELP, and whether it has `direction`."""

    name: str
    type: str
    help: str
    directional: bool = False


LISTENER_CONNECTIONS = Family(
    "stunner_listener_connections",
    "gauge",
    "Number of active downstream connections at a listener.",
)
LISTENER_CONNECTIONS_TOTAL = Family(
    "stunner_listener_connections_total",
    "counter",
    "Number of downstream connections at a listener.",
)
LISTENER_PACKETS = Family(
    "stunner_listener_packets_total",
    "counter",
    "Number of datagrams sent or received at a listener.",
    directional=True,
)
LISTENER_BYTES = Family(
    "stunner_listener_bytes_total",
    "counter",
    "Number of bytes sent or received at a listener.",
    directional=True,
)
CLUSTER_CONNECTIONS = Family(
    "stunner_cluster_connections",
    "gauge",
    "Number of active upstream connections on behalf of a listener",
)
CLUSTER_CONNECTIONS_TOTAL = Family(
    "stunner_cluster_connections_total",
    "counter",
    "Number of upstream connections on behalf of a listener.",
)
CLUSTER_PACKETS = Family(
    "stunner_cluster_packets_total",
    "counter",
    "Number of datagrams sent to backends or received from backends on behalf of a listener",
    directional=True,
)
CLUSTER_BYTES = Family(
    "stunner_cluster_bytes_total",
    "counter",
    "Number of bytes sent to backends or received from backends on behalf of a listener.",
    directional=True,
)
ALLOCATIONS_ACTIVE = Family("stunner_allocations_active", "gauge", "Number of active allocations.")

COUNTERS = (
    LISTENER_CONNECTIONS_TOTAL,
    LISTENER_PACKETS,
    LISTENER_BYTES,
    CLUSTER_CONNECTIONS_TOTAL,
    CLUSTER_PACKETS,
    CLUSTER_BYTES,
)
GAUGES = (LISTENER_CONNECTIONS, CLUSTER_CONNECTIONS, ALLOCATIONS_ACTIVE)
ALL = COUNTERS + GAUGES
BY_NAME = {f.name: f for f in ALL}
# Families beyond upstream's table (docs/metrics.md: health, refusals, drops, lifecycle,
# capacity), as exposed sample names: not stray, and not part of the connection contract.
# e2e/test_refusals.py checks their label sets and values.
EXTENSIONS = frozenset(
    {
        "stunner_turn_responses_total",
        "stunner_dropped_packets_total",
        "stunner_dropped_bytes_total",
        "stunner_allocations_deleted_total",
        "stunner_allocation_duration_seconds_bucket",
        "stunner_allocation_duration_seconds_count",
        "stunner_allocation_duration_seconds_sum",
        "stunner_listener_ready",
        "stunner_config_last_reload_successful",
        "stunner_config_last_reload_success_timestamp_seconds",
        "stunner_draining",
        "stunner_build_info",
        "stunner_allocation_quota_per_user",
        "stunner_allocations_limit",
        "stunner_listener_allocations_limit",
        "stunner_listener_relay_ports",
    }
)

# Every family name a stunnerd may expose: the spec's table and the documented extensions.
DOCUMENTED = frozenset(BY_NAME) | EXTENSIONS


@dataclass(frozen=True, order=True)
class Key:
    """One series the checks address: family, listener name, direction ('' if none)."""

    family: str
    name: str
    direction: str = ""

    def matchers(self) -> str:
        parts = [f'name="{self.name}"']
        if self.direction:
            parts.append(f'direction="{self.direction}"')
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.family}{{{self.matchers()}}}"


def keys_for(family: Family, name: str) -> list[Key]:
    """Every series of `family` for listener `name`."""
    if family.directional:
        return [Key(family.name, name, d) for d in DIRECTIONS]
    return [Key(family.name, name)]
