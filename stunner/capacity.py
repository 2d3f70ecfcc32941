"""Configured limits beside their usage, so that a dashboard can show headroom.

Read from the running config at scrape time; the usage they pair with is exported elsewhere
(``stunner_allocations_active``, ``process_open_fds`` against ``process_max_fds``). These
families go beyond upstream STUNner's metrics (docs/metrics.md, "Capacity").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from .config import StunnerConfig

USER_QUOTA = "stunner_allocation_quota_per_user"
ALLOCATIONS_LIMIT = "stunner_allocations_limit"
LISTENER_ALLOCATIONS_LIMIT = "stunner_listener_allocations_limit"
RELAY_PORTS = "stunner_listener_relay_ports"


class CapacityCollector:
    """The limits of the config that runs; ``processes`` data planes each enforce them."""

    def __init__(self, config: Callable[[], StunnerConfig | None], processes: int = 1) -> None:
        self._config = config
        self._processes = processes

    def collect(self) -> Iterator[Metric]:
        config = self._config() or StunnerConfig()
        limits = config.admin.limits
        n = self._processes
        yield GaugeMetricFamily(
            USER_QUOTA,
            "Allocations one username may hold in one stunnerd process (0: no quota).",
            value=config.admin.user_quota,
        )
        yield GaugeMetricFamily(
            ALLOCATIONS_LIMIT,
            "Allocations stunnerd accepts in all, over its data-plane processes (0: no limit).",
            value=limits.allocations_total * n,
        )
        per_listener = GaugeMetricFamily(
            LISTENER_ALLOCATIONS_LIMIT,
            "Allocations a listener accepts, over the data-plane processes (0: no limit).",
            labels=("name",),
        )
        ports = GaugeMetricFamily(
            RELAY_PORTS, "Number of relay ports in a listener's port range.", labels=("name",)
        )
        for listener in config.listeners:
            per_listener.add_metric((listener.name,), limits.allocations_per_listener * n)
            ports.add_metric(
                (listener.name,), max(0, listener.max_relay_port - listener.min_relay_port + 1)
            )
        yield per_listener
        yield ports
