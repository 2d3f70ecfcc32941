"""The local target: stunnerd processes on 127.0.0.x, a UDP echo backend, a real Prometheus.

Roles: `a` is the main gateway (UDP, TCP and TLS listeners routed to the backend's cluster, a
listener routed to a cluster without it, a UDP listener reserved for turnutils_uclient,
which leaks allocations by design, and one listener per traffic shape); `b` to `i` are started
by single scenarios (metricsEndpoint off-then-on, the miscounting wrapper, stunnerctl output,
two workers, a lifetime cap, two deviant gateways, the browser's gateway). One more address is
the stranger: a source no permission ever names.
Every gateway's metrics address is in Prometheus' file_sd list from the start, so a gateway
that starts later is scraped within one interval instead of waiting for service discovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from e2e import gateway as gw
from e2e.certs import self_signed
from e2e.checks import Scope
from e2e.clients import ASYMMETRIC, Endpoint
from e2e.netutil import lease_addresses, poll
from e2e.prom import PrometheusServer, ScrapeTarget
from e2e.scrape_source import ScrapeSpec, scrape_spec
from e2e.static_target import StaticTarget
from e2e.targets.base import Target
from testkit.echo import EchoThread
from testkit.ports import free_port

log = logging.getLogger(__name__)

ROLES = ("a", "b", "c", "d", "e", "f", "g", "h", "i")
MEDIA_PLANE = "stunner/media-plane"
ELSEWHERE = "stunner/elsewhere"
ELSEWHERE_ENDPOINTS = ["192.0.2.0/24"]  # TEST-NET-1: holds no backend
SELFTEST_LISTENER = "selftest/static/listener"

NAMES = {
    "udp": "stunner/udp-gateway/udp-listener",
    "tcp": "stunner/tcp-gateway/tcp-listener",
    "tls": "stunner/tls-gateway/tls-listener",
    "denied": "stunner/denied-gateway/udp-listener",
    "uclient": "stunner/uclient-gateway/udp-listener",
}
# One listener per traffic shape and protocol on gateway `a`, so shapes run side by side and
# each one's counters are its own (e2e/shapes.py); "restart" is test_restart's.
SHAPES = (
    "asym/udp",
    "asym/tcp",
    "unsolicited/udp",
    "pipeline/udp",
    "pipeline/tcp",
    "pipeline/tls",
    "vanish/tcp",
    "vanish/tls",
    "sendfail/udp",
    "sendfail/tcp",
    "guard/udp",
    "restart/tls",  # before restart/udp: once the moved UDP port serves, TLS has restarted
    "restart/udp",
)


def shape_name(key: str) -> str:
    shape, protocol = key.split("/")
    return f"stunner/{shape}-gateway/{protocol}-listener"


class LocalLab:
    """Addresses, the echo backend, Prometheus and the (not yet started) gateways."""

    def __init__(
        self,
        prometheus_binary: str,
        reportdir: Path,
        *,
        keep: bool,
        stunnerd: tuple[str, ...] = gw.STUNNERD,
    ) -> None:
        self.keep = keep
        self.stunnerd = stunnerd
        self.workdir = Path(tempfile.mkdtemp(prefix="stunner-e2e-"))
        self.logdir = reportdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.spec: ScrapeSpec = scrape_spec()
        self._stack = contextlib.ExitStack()
        self.configs: dict[str, gw.GatewayConfig | str] = {}
        try:
            self._setup(prometheus_binary)
        except BaseException:
            self.close()
            raise

    def _setup(self, prometheus_binary: str) -> None:
        try:
            lease = lease_addresses(len(ROLES) + 2, want_tcp_port=self.spec.port)
            self.metrics_port = {role: self.spec.port for role in ROLES}
        except RuntimeError:
            lease = lease_addresses(len(ROLES) + 2)
            self.metrics_port = {}
        self._stack.callback(lease.close)
        *gateway_addrs, backend_addr, self.stranger = lease.addresses
        self.address = dict(zip(ROLES, gateway_addrs, strict=True))
        for role, addr in self.address.items():
            if role not in self.metrics_port:
                self.metrics_port[role] = free_port(addr, udp=False)
                log.warning(
                    "metrics port %d busy; %s uses %d",
                    self.spec.port,
                    role,
                    self.metrics_port[role],
                )
        self.backend = self._stack.enter_context(EchoThread(backend_addr))
        # In the same cluster (same IP, another port): answers bigger, sometimes twice.
        self.asymmetric = self._stack.enter_context(EchoThread(backend_addr, answer=ASYMMETRIC))
        self.static = self._stack.enter_context(
            StaticTarget("127.0.0.1", self.spec.path, SELFTEST_LISTENER)
        )
        self.gateways = {
            role: gw.Gateway(
                role,
                addr,
                self.workdir,
                self.logdir,
                health_port=free_port(addr, udp=False),
                argv=self.stunnerd,
            )
            for role, addr in self.address.items()
        }
        self._stack.callback(self._stop_gateways)
        self.prometheus = PrometheusServer(prometheus_binary, self.workdir / "prom", self.spec)
        self.prometheus.log_path = self.logdir / "prometheus.log"
        self.prometheus.workdir.mkdir(parents=True)
        targets = [
            ScrapeTarget(f"{addr}:{self.metrics_port[role]}", (("gateway", role),))
            for role, addr in self.address.items()
        ]
        targets.append(ScrapeTarget(self.static.address, (("gateway", "selftest"),)))
        self.prometheus.start(targets)
        self._stack.callback(self.prometheus.stop)
        self.cert = self_signed(self.address["a"])

    # -- helpers for scenarios ------------------------------------------------------------

    def scope(self, role: str) -> Scope:
        """Queries scoped to one gateway (file_sd label `gateway`)."""
        return Scope(
            prom=self.prometheus.client,
            selector=f'gateway="{role}"',
            freshness=f'up{{gateway="{role}"}}',
            healthy=f'up{{gateway="{role}"}} == 1',
            match_target=f'{{gateway="{role}"}}',
            target_labels=frozenset({"instance", "job", "gateway"}),
        )

    def metrics_url(self, role: str) -> str:
        return f"http://{self.address[role]}:{self.metrics_port[role]}{self.spec.path}"

    def backend_cluster(self) -> gw.ClusterSpec:
        return gw.ClusterSpec(MEDIA_PLANE, [self.backend.address[0]])

    def single_udp_config(self, role: str, *, metrics: bool) -> gw.GatewayConfig:
        """A gateway with one UDP listener routed to the backend (roles b and c)."""
        addr = self.address[role]
        return gw.GatewayConfig(
            name=f"e2e-{role}",
            address=addr,
            health_port=self.gateways[role].health_port,
            metrics_url=self.metrics_url(role) if metrics else "",
            listeners=[
                gw.ListenerSpec(
                    f"stunner/{role}-gateway/udp-listener", "UDP", free_port(addr), [MEDIA_PLANE]
                )
            ],
            clusters=[self.backend_cluster()],
        )

    def single_udp_endpoint(self, config: gw.GatewayConfig) -> Endpoint:
        """How a client reaches the one listener of a `single_udp_config` gateway."""
        listener = config.listeners[0]
        return Endpoint(listener.name, "udp", config.address, listener.port)

    def main_config(self) -> gw.GatewayConfig:
        addr = self.address["a"]
        listeners = [
            gw.ListenerSpec(NAMES["udp"], "UDP", free_port(addr), [MEDIA_PLANE]),
            gw.ListenerSpec(NAMES["tcp"], "TCP", free_port(addr), [MEDIA_PLANE]),
            gw.ListenerSpec(
                NAMES["tls"],
                "TLS",
                free_port(addr),
                [MEDIA_PLANE],
                self.cert.cert_b64,
                self.cert.key_b64,
            ),
            gw.ListenerSpec(NAMES["denied"], "UDP", free_port(addr), [ELSEWHERE]),
            gw.ListenerSpec(NAMES["uclient"], "UDP", free_port(addr), [MEDIA_PLANE]),
        ]
        for key in SHAPES:
            tls = key.endswith("/tls")
            listeners.append(
                gw.ListenerSpec(
                    shape_name(key),
                    key.split("/")[1].upper(),
                    free_port(addr),
                    [MEDIA_PLANE],
                    self.cert.cert_b64 if tls else "",
                    self.cert.key_b64 if tls else "",
                )
            )
        return gw.GatewayConfig(
            name="e2e-a",
            address=addr,
            health_port=self.gateways["a"].health_port,
            metrics_url=self.metrics_url("a"),
            listeners=listeners,
            clusters=[self.backend_cluster(), gw.ClusterSpec(ELSEWHERE, ELSEWHERE_ENDPOINTS)],
        )

    def shape_endpoint(self, config: gw.GatewayConfig, key: str) -> Endpoint:
        """How a client reaches the listener of shape `key` ("asym/udp") in `config`."""
        name = shape_name(key)
        (lis,) = (lis for lis in config.listeners if lis.name == name)
        protocol = key.split("/")[1]
        ctx = self.cert.client_context() if protocol == "tls" else None
        return Endpoint(name, protocol, config.address, lis.port, ctx)  # type: ignore[arg-type]

    def wait_up(self, role: str, timeout: float = 25.0) -> None:
        """Until Prometheus has scraped `role` successfully (first sample ~6 s on 2.42)."""
        client = self.prometheus.client
        poll(
            lambda: client.query(f'up{{gateway="{role}"}}'),
            lambda rows: bool(rows) and rows[0][1] == 1.0,
            timeout=timeout,
            what=f"up{{gateway={role!r}}} == 1",
        )

    @contextlib.contextmanager
    def running(
        self,
        role: str,
        config: gw.GatewayConfig | str,
        *,
        argv: tuple[str, ...] | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[gw.Gateway]:
        """Start gateway `role` on `config` (with `argv` instead of stunnerd) for a scenario."""
        gateway = self.gateways[role]
        gateway.argv = argv or self.stunnerd
        gateway.env = env or {}
        gateway.write(config)
        self.configs[role] = config
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()

    @contextlib.asynccontextmanager
    async def running_async(
        self,
        role: str,
        config: gw.GatewayConfig | str,
        *,
        argv: tuple[str, ...] | None = None,
        env: dict[str, str] | None = None,
    ) -> AsyncIterator[gw.Gateway]:
        """`running`, scraped once, without blocking the event loop (scenarios running side
        by side keep going while this gateway starts and stops)."""
        manager = self.running(role, config, argv=argv, env=env)
        gateway = await asyncio.to_thread(manager.__enter__)
        try:
            await asyncio.to_thread(self.wait_up, role)
            yield gateway
        finally:
            await asyncio.to_thread(manager.__exit__, None, None, None)

    def _stop_gateways(self) -> None:
        for gateway in self.gateways.values():
            gateway.stop()

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            if self.keep:
                log.warning("kept %s", self.workdir)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)


def main_target(lab: LocalLab) -> Target:
    """Start gateway `a` and describe it as a Target (call once per session)."""
    config = lab.main_config()
    gateway = lab.gateways["a"]
    gateway.write(config)
    lab.configs["a"] = config
    gateway.start()
    lab.wait_up("a")
    by_name = {lis.name: lis for lis in config.listeners}
    addr = lab.address["a"]

    def endpoint(key: str, protocol: str) -> Endpoint:
        lis = by_name[NAMES[key]]
        ctx = lab.cert.client_context() if protocol == "tls" else None
        return Endpoint(lis.name, protocol, addr, lis.port, ctx)  # type: ignore[arg-type]

    return Target(
        kind="local",
        listeners={p: endpoint(p, p) for p in ("udp", "tcp", "tls")},
        username=gw.USERNAME,
        password=gw.PASSWORD,
        peer=lab.backend.address,
        scope=lab.scope("a"),
        denied=endpoint("denied", "udp"),
        listener_names=set(by_name),
        backend=lab.backend,
        uclient=endpoint("uclient", "udp"),
        lab=lab,
        notes=[f"scrape config from {lab.spec.source}"],
        asymmetric_peer=lab.asymmetric.address,
        stranger_host=lab.stranger,
        shape_listeners={key: lab.shape_endpoint(config, key) for key in SHAPES},
    )
