"""Readiness beyond "the process runs": configured listeners that are not serving (and why), and
how the last config reload went.

The daemon holds the state; ``/ready`` answers from it, and `ReadinessCollector` exports it at
scrape time. These families go beyond upstream STUNner's metrics (docs/metrics.md, "Health").
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from . import __version__

# (listener name, None while it serves, else why it does not)
ListenerStates = Callable[[], Iterable[tuple[str, str | None]]]

LISTENER_READY = "stunner_listener_ready"
RELOAD_SUCCESSFUL = "stunner_config_last_reload_successful"
RELOAD_TIMESTAMP = "stunner_config_last_reload_success_timestamp_seconds"
DRAINING = "stunner_draining"
BUILD_INFO = "stunner_build_info"
HELP = {
    LISTENER_READY: "Whether a configured listener is serving (1) or not, e.g. its port is taken.",
    RELOAD_SUCCESSFUL: "Whether the last config load or reload attempt was successful.",
    RELOAD_TIMESTAMP: "Timestamp of the last successful config load or reload.",
    DRAINING: "Whether stunnerd is shutting down gracefully, waiting for allocations to end.",
    BUILD_INFO: "Always 1; the labels say which stunnerd version runs on which Python.",
}


class ReloadStatus:
    """The outcome of the last attempt to load the config, as Prometheus reports its own."""

    def __init__(self) -> None:
        self.successful = False  # nothing loaded yet
        self.success_time = 0.0  # unix seconds of the last success; 0 = never

    def succeeded(self) -> None:
        self.successful = True
        self.success_time = time.time()

    def failed(self) -> None:
        self.successful = False  # the timestamp keeps the last success

    def recovered(self) -> None:
        """The rejected file was put back to what runs: nothing loaded, nothing failing."""
        if self.success_time:
            self.successful = True


class ReadinessCollector:
    """Exports listener readiness (when this process runs the data plane) and reload status."""

    def __init__(
        self,
        reload: ReloadStatus,
        listeners: ListenerStates | None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self._reload = reload
        self._listeners = listeners
        self._draining = draining

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not ask the workers yet (they may not exist)

    def collect(self) -> Iterator[Metric]:
        if self._listeners is not None:
            ready = GaugeMetricFamily(LISTENER_READY, HELP[LISTENER_READY], labels=("name",))
            for name, problem in self._listeners():
                ready.add_metric((name,), 0.0 if problem else 1.0)
            yield ready
        reload = self._reload
        yield GaugeMetricFamily(
            RELOAD_SUCCESSFUL, HELP[RELOAD_SUCCESSFUL], value=1.0 if reload.successful else 0.0
        )
        yield GaugeMetricFamily(RELOAD_TIMESTAMP, HELP[RELOAD_TIMESTAMP], value=reload.success_time)
        yield GaugeMetricFamily(DRAINING, HELP[DRAINING], value=1.0 if self._draining() else 0.0)
        info = GaugeMetricFamily(BUILD_INFO, HELP[BUILD_INFO], labels=("version", "python"))
        info.add_metric((__version__, platform.python_version()), 1.0)
        yield info
