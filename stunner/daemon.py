"""stunnerd: run a config, reconcile changes live, drain on SIGTERM.

``Stunner.apply`` diffs the new config against the running one and touches only what changed:
a metrics endpoint change restarts only the metrics server, a route change keeps the sockets,
and a listener keeps its counters across a restart because stats are keyed by listener name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator

from . import constants
from .auth import Authenticator, LongTermAuth, PlaintextAuth
from .cluster import Admission, Cluster
from .config import (
    AuthConfig,
    ClusterConfig,
    ConfigDiff,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    StunnerConfig,
    diff,
    loads,
    parse_http_endpoint,
    warnings,
)
from .health import Health
from .httpd import HttpServer, Response
from .listener import Listener, needs_restart
from .logs import setup_logging
from .stats import ListenerSample, ListenerStats
from .telemetry import StatsSource, build_registry, exposition, listener_sample
from .turn import Allocation, DeleteReason
from .turn.limits import Quotas

logger = logging.getLogger("stunner.daemon")

DNS_FIRST_RESOLVE_TIMEOUT = 2.0


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
        self._limits = LimitsConfig()
        self.own_addresses: set[str] = set()  # the relay's addresses: peers need explicit naming
        self.health = Health()
        self.registry = build_registry(stats_source or self.iter_stats)
        self.metrics_server: HttpServer | None = None
        self.health_server: HttpServer | None = None
        self._metrics_url = ""
        self._health_url: str | None = ""
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
        return listener_sample(stats, lis.server.allocations.values(), len(lis.streams))

    def allocation_count(self) -> int:
        return sum(len(lis.server.allocations) for lis in self.listeners.values())

    # reconcile

    async def apply(self, new: StunnerConfig) -> None:
        """Make the running state match ``new``, changing only what differs."""
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
            await self._reconcile_admin(new)
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
        if clusters_changed:
            for lis in self.listeners.values():
                lis.server.revoke_unadmitted()

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
        )
        try:
            await lis.start()
        except (OSError, ValueError) as exc:
            logger.error("listener %s cannot start: %s; the others keep running", cfg.name, exc)
            return
        self.listeners[cfg.name] = lis

    async def _reconcile_admin(self, new: StunnerConfig) -> None:
        admin = new.admin
        if admin.metrics_endpoint != self._metrics_url:
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
            self._metrics_url = admin.metrics_endpoint
        if admin.healthcheck_endpoint != self._health_url or self.health_server is None:
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
            self._health_url = admin.healthcheck_endpoint

    async def serve_default_health(self) -> None:
        """Health checks before any config exists; the first config may move them."""
        await self._reconcile_admin(StunnerConfig())

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
        for lis in self.listeners.values():
            await lis.stop(DeleteReason.SHUTDOWN)
        self.listeners.clear()
        for cluster in self.clusters.values():
            cluster.stop()
        for server in (self.metrics_server, self.health_server):
            if server is not None:
                await server.stop()


class ConfigWatcher:
    """Polls a config file and hands valid new versions to ``Stunner.apply``.

    Polling (not inotify) follows the kubelet's ConfigMap symlink swap and survives the file
    being deleted and recreated. A changed file is applied only once it has stayed the same
    for one more poll, so a non-atomic writer caught halfway (a valid but truncated file) is
    not applied. An invalid file is logged once and the last good config keeps running.
    """

    def __init__(self, path: str, stunner: Stunner, interval: float = 0.25) -> None:
        self.path = path
        self.stunner = stunner
        self.interval = interval
        self._last_digest = b""
        self._last_error = ""
        self._last_stat: tuple[int, int, int] | None = None
        self._pending: str | None = None  # changed text waiting one poll to prove stable

    def read(self) -> str | None:
        """The file's text if it changed since the last look, else None."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._last_stat:
                return None
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            self._report(f"cannot read config {self.path}: {exc}")
            self._last_stat = None
            self._pending = None
            return None
        self._last_stat = stamp
        if hashlib.sha256(text.encode()).digest() == self._last_digest:
            self._pending = None  # changed back to what runs
            return None
        return text

    async def check_once(self) -> bool:
        """One poll: True if a new config was applied."""
        text = self.read()
        if text is not None and text != self._pending:
            self._pending = text  # changed: wait for the next poll to see it unchanged
            return False
        if self._pending is None:
            return False
        text, self._pending = self._pending, None
        self._last_digest = hashlib.sha256(text.encode()).digest()
        try:
            config = loads(text, source=self.path)
        except ConfigError as exc:
            self._report(f"config rejected, the last good config keeps running: {exc}")
            return False
        self._last_error = ""
        started = time.monotonic()
        await self.stunner.apply(config)
        logger.info("config %s applied in %.0f ms", self.path, (time.monotonic() - started) * 1e3)
        return True

    def _report(self, message: str) -> None:
        if message != self._last_error:
            logger.error("%s", message)
            self._last_error = message

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)
