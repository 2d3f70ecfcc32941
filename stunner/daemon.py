"""stunnerd: run a config, reconcile changes live, drain on SIGTERM.

``Stunner.apply`` diffs the new config against the running one and touches only what changed:
a metrics endpoint change restarts only the metrics server, a route change keeps the sockets,
and a listener keeps its counters across a restart because stats are keyed by listener name.

A listener that cannot start (its port is taken) keeps the process running but not ready:
``/ready`` answers 503 naming it, ``stunner_listener_ready`` is 0, and a bind failure is
retried every LISTENER_RETRY_INTERVAL seconds until the port is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from . import constants
from .auth import Authenticator, LongTermAuth, PlaintextAuth
from .capacity import CapacityCollector
from .cluster import Admission, Cluster
from .config import (
    AuthConfig,
    ClusterConfig,
    ConfigDiff,
    LimitsConfig,
    ListenerConfig,
    StunnerConfig,
    diff,
    parse_http_endpoint,
    warnings,
)
from .health import Health
from .httpd import HttpServer, Response
from .listener import Listener, needs_restart
from .logs import setup_logging
from .readiness import ListenerStates, ReadinessCollector, ReloadStatus
from .stats import ListenerSample, ListenerStats
from .telemetry import StatsSource, build_registry, exposition, listener_sample
from .turn import Allocation, DeleteReason
from .turn.limits import AmplificationGuard, Quotas
from .turn.own import OwnListeners

logger = logging.getLogger("stunner.daemon")

DNS_FIRST_RESOLVE_TIMEOUT = 2.0
LISTENER_RETRY_INTERVAL = 5.0  # seconds between attempts to bind a listener whose port was taken


def make_authenticator(auth: AuthConfig) -> Authenticator:
    if auth.type == "longterm":
        return LongTermAuth(auth.realm, auth.secret)
    return PlaintextAuth(auth.realm, auth.username, auth.password)


class OnDeleted:
    """An AllocationObserver that calls back on every deletion: the drain waits on it."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def created(self, alloc: Allocation) -> None:
        pass

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None:
        self.callback()


class Stunner:
    """One stunnerd instance: listeners, clusters, auth, and the admin servers.

    With worker processes, the supervisor runs only the admin part (metrics summed from the
    workers through ``stats_source``) and each worker only the data plane.
    """

    def __init__(
        self,
        reuse_port: bool = False,
        follow_loglevel: bool = False,
        data_plane: bool = True,
        admin: bool = True,
        stats_source: StatsSource | None = None,
        worker_pids: Callable[[], Iterable[int]] | None = None,
        worker_states: ListenerStates | None = None,
        processes: int = 1,
    ) -> None:
        self.config: StunnerConfig | None = None
        self.follow_loglevel = follow_loglevel  # False when -l/-v fixed the levels
        self.reuse_port = reuse_port
        self.data_plane = data_plane
        self.admin = admin
        self.listeners: dict[str, Listener] = {}
        self.stats: dict[str, ListenerStats] = {}
        self.clusters: dict[str, Cluster] = {}
        self.authenticator: Authenticator | None = None
        self.quotas = Quotas()
        self.guard = AmplificationGuard()  # one budget for every UDP listener of the process
        self._limits = LimitsConfig()
        self.own_addresses: set[str] = set()  # the relay's addresses: peers need explicit naming
        self.own_listeners = OwnListeners()  # bound listener addresses: never relayed to
        self.health = Health()
        self.health.problems = self.not_serving
        self.reload = ReloadStatus()
        # Listeners configured but not serving: why, and those whose bind is retried.
        self.listener_errors: dict[str, str] = {}
        self._retry: dict[str, ListenerConfig] = {}
        self._retry_task: asyncio.Task[None] | None = None
        self._reconcile_lock = asyncio.Lock()  # apply and the bind retries take turns
        self.draining = False  # a graceful shutdown has begun (stunner_draining)
        self.registry = build_registry(stats_source or self.iter_stats, workers=worker_pids)
        # A supervisor runs no listeners: its workers report whether they serve them.
        self._states = worker_states or self.listener_states
        self.registry.register(
            ReadinessCollector(
                self.reload,
                self._states if data_plane or worker_states else None,
                lambda: self.draining,
            )
        )
        self.registry.register(CapacityCollector(lambda: self.config, processes))
        self.metrics_server: HttpServer | None = None
        self.health_server: HttpServer | None = None
        self._drained = asyncio.Event()

    def iter_stats(self) -> Iterator[tuple[str, ListenerSample]]:
        """Every configured listener's sample, read now (a scrape, or a worker's report)."""
        for name, stats in list(self.stats.items()):
            yield name, self.sample(name, stats)

    def sample(self, name: str, stats: ListenerStats | None = None) -> ListenerSample:
        stats = self.stats[name] if stats is None else stats
        lis = self.listeners.get(name)
        if lis is None:  # not running (failed to start, or between stop and start)
            return listener_sample(stats, (), 0)
        sample = listener_sample(stats, lis.server.allocations.values(), len(lis.streams))
        return sample._replace(serving=1)

    def allocation_count(self) -> int:
        return sum(len(lis.server.allocations) for lis in self.listeners.values())

    def listener_states(self) -> Iterator[tuple[str, str | None]]:
        """Each configured listener's name, and None while it serves, else why it does not."""
        for cfg in self.config.listeners if self.config else ():
            yield cfg.name, self.listener_errors.get(cfg.name)

    def not_serving(self) -> list[str]:
        """Why ``/ready`` says 503 although a config runs: one line per listener not serving."""
        return [f"listener {name}: {why}" for name, why in self._states() if why]

    # reconcile

    async def apply(self, new: StunnerConfig) -> None:
        """Make the running state match ``new``, changing only what differs."""
        async with self._reconcile_lock:
            await self._apply(new)
        self.reload.succeeded()

    async def _apply(self, new: StunnerConfig) -> None:
        old = self.config or StunnerConfig()
        change = diff(old, new)
        if self.follow_loglevel and (change.loglevel_changed or self.config is None):
            setup_logging(new.admin.loglevel)
        for warning in warnings(new):
            logger.warning("config: %s", warning)
        if self.data_plane:
            await self._reconcile_data_plane(change, new)
        self.config = new
        if self.admin:
            await self._reconcile_admin(change, new)
        self.health.ready = True

    async def _reconcile_data_plane(self, change: ConfigDiff, new: StunnerConfig) -> None:
        limits = new.admin.limits
        self._limits = limits
        self.quotas.user_quota = new.admin.user_quota
        self.quotas.total = limits.allocations_total
        if change.limits_changed:
            for lis in self.listeners.values():
                lis.server.limits = limits
        if change.auth_changed or self.authenticator is None:
            self.authenticator = make_authenticator(new.auth)
            for lis in self.listeners.values():
                lis.server.auth.authenticator = self.authenticator

        clusters_changed = False
        for cfg in change.clusters_removed:
            self.clusters.pop(cfg.name).stop()
            clusters_changed = True
        for old_cfg, cfg in change.clusters_changed:
            self.clusters.pop(old_cfg.name).stop()
            await self._add_cluster(cfg)
            clusters_changed = True
        for cfg in change.clusters_added:
            await self._add_cluster(cfg)

        for removed in change.listeners_removed:
            stopped = self.listeners.pop(removed.name, None)
            if stopped is not None:
                await stopped.stop(DeleteReason.LISTENER_REMOVED)
            del self.stats[removed.name]
            self.listener_errors.pop(removed.name, None)
            self._retry.pop(removed.name, None)
            logger.info("listener %s removed", removed.name)
        for old_l, new_l in change.listeners_changed:
            running = self.listeners.get(old_l.name)
            if running is not None and not needs_restart(old_l, new_l):
                running.update_in_place(new_l, self._admission(new_l))
                logger.info("listener %s updated in place", new_l.name)
                continue
            if running is not None:
                await running.stop(DeleteReason.LISTENER_REMOVED)
                del self.listeners[new_l.name]
            await self._start_listener(new_l)
        for added in change.listeners_added:
            self.stats[added.name] = ListenerStats()
            await self._start_listener(added)
        own = {lis.server.relay_advertised for lis in self.listeners.values()} | {
            cfg.address for cfg in new.listeners if cfg.address not in ("0.0.0.0", "")
        }
        if own != self.own_addresses:
            self.own_addresses.clear()
            self.own_addresses.update(own)
            clusters_changed = True
        if self._update_own_listeners():
            clusters_changed = True
        if clusters_changed:
            for lis in self.listeners.values():
                lis.server.revoke_unadmitted()

    def _update_own_listeners(self) -> bool:
        """The listeners bound now (a bind retry adds one); True if the set changed."""
        return self.own_listeners.update(
            (lis.config.address, lis.config.port) for lis in self.listeners.values()
        )

    def _admission(self, cfg: ListenerConfig) -> Admission:
        return Admission(self.clusters, cfg.routes, self.own_addresses)

    async def _add_cluster(self, cfg: ClusterConfig) -> None:
        cluster = Cluster(cfg)
        self.clusters[cluster.name] = cluster
        if cluster.config.type == "STRICT_DNS":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cluster.resolve_once(), DNS_FIRST_RESOLVE_TIMEOUT)
            cluster.start()

    async def _start_listener(self, cfg: ListenerConfig) -> None:
        assert self.authenticator is not None
        stats = self.stats.setdefault(cfg.name, ListenerStats())
        lis = Listener(
            cfg,
            stats,
            self.authenticator,
            self._admission(cfg),
            self.reuse_port,
            limits=self._limits,
            quotas=self.quotas,
            events=OnDeleted(self._check_drained),
            guard=self.guard,
            own_listeners=self.own_listeners,
        )
        try:
            await lis.start()
        except (OSError, ValueError) as exc:
            self._not_started(cfg, exc)
            return
        self.listeners[cfg.name] = lis
        if self._update_own_listeners():  # a retried bind between reloads
            for running in self.listeners.values():
                running.server.revoke_unadmitted()
        self._retry.pop(cfg.name, None)
        if self.listener_errors.pop(cfg.name, None) is not None:
            logger.info("listener %s serving now", cfg.name)

    def _not_started(self, cfg: ListenerConfig, exc: Exception) -> None:
        """Record why a listener does not serve (logged once per reason); retry a bind error."""
        why = f"cannot serve {cfg.protocol} on {cfg.address}:{cfg.port}: {exc}"
        if self.listener_errors.get(cfg.name) != why:
            logger.error("listener %s %s; the others keep running", cfg.name, why)
        self.listener_errors[cfg.name] = why
        if isinstance(exc, OSError) and exc.errno is not None:  # the kernel said no: try again
            self._retry[cfg.name] = cfg
            if self._retry_task is None:
                self._retry_task = asyncio.create_task(self._retry_listeners())
        else:
            self._retry.pop(cfg.name, None)

    async def _retry_listeners(self) -> None:
        try:
            while self._retry:
                await asyncio.sleep(LISTENER_RETRY_INTERVAL)
                async with self._reconcile_lock:
                    for name, cfg in list(self._retry.items()):
                        if name not in self.listeners:
                            await self._start_listener(cfg)
        finally:
            self._retry_task = None

    def _stop_retrying(self) -> None:
        self._retry.clear()
        if self._retry_task is not None:
            self._retry_task.cancel()

    async def _reconcile_admin(self, change: ConfigDiff, new: StunnerConfig) -> None:
        """Restart an admin server whose endpoint changed; retry the health server if it is
        not up (its port was taken), since probes depend on it."""
        admin = new.admin
        if change.metrics_endpoint_changed:
            if self.metrics_server is not None:
                await self.metrics_server.stop()
                self.metrics_server = None
            endpoint = parse_http_endpoint(
                admin.metrics_endpoint, constants.DEFAULT_METRICS_PORT, field="metrics_endpoint"
            )
            if endpoint is not None:
                server = HttpServer("metrics", endpoint, self._metrics)
                if await server.start():
                    self.metrics_server = server
        if change.healthcheck_endpoint_changed or self.health_server is None:
            if self.health_server is not None:
                await self.health_server.stop()
                self.health_server = None
            endpoint = parse_http_endpoint(
                admin.healthcheck_endpoint or "",
                constants.DEFAULT_HEALTH_PORT,
                field="healthcheck_endpoint",
            )
            if endpoint is not None:
                server = HttpServer("health", endpoint, self.health.handle)
                if await server.start():
                    self.health_server = server

    async def serve_default_health(self) -> None:
        """Health checks before any config exists; the first config may move them."""
        await self._reconcile_admin(ConfigDiff(), StunnerConfig())

    def _metrics(self, path: str) -> Response:
        return 200, "text/plain; version=0.0.4; charset=utf-8", exposition(self.registry)

    # shutdown

    def _check_drained(self) -> None:
        if self.allocation_count() == 0:
            self._drained.set()

    async def drain(self, grace_period: float, abort: asyncio.Event | None = None) -> None:
        """Graceful shutdown: not ready, no new allocations, wait for the existing ones
        (until the grace period ends, or ``abort`` is set: SIGINT during a drain)."""
        self.health.ready = False
        self.draining = True
        self._stop_retrying()
        for lis in self.listeners.values():
            lis.stop_accepting()
        remaining = self.allocation_count()
        logger.info(
            "graceful shutdown: %d allocation(s) left, waiting up to %ds", remaining, grace_period
        )
        if remaining:
            self._drained.clear()
            self._check_drained()
            waits = [asyncio.ensure_future(self._drained.wait())]
            if abort is not None:
                waits.append(asyncio.ensure_future(abort.wait()))
            await asyncio.wait(waits, timeout=grace_period, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()

    async def close(self) -> None:
        self.health.ready = False
        self._stop_retrying()
        for lis in self.listeners.values():
            await lis.stop(DeleteReason.SHUTDOWN)
        self.listeners.clear()
        for cluster in self.clusters.values():
            cluster.stop()
        for server in (self.metrics_server, self.health_server):
            if server is not None:
                await server.stop()
