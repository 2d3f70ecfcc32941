"""The browser scenario's setup: a gateway for the browser, its namespace, captures, Chromium.

Each call uses two listeners of one transport, `caller` and `callee`, one per peer connection,
so that Prometheus can tell the two allocations apart: what the caller's relay sent (cluster tx
of the caller listener) is what the callee's relay received (cluster rx of the callee).
Both relays live on the same address, so the cluster that the listeners route to names that
address: the peer of each allocation is the gateway's own other relay (relay-to-relay).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from e2e import gateway as gw
from e2e.browser import capture
from e2e.browser.chromium import Chromium, spki_hash
from e2e.browser.netns import BrowserNet, browser_net
from e2e.certs import SelfSigned, self_signed
from e2e.netutil import poll
from e2e.targets.base import Target
from testkit.ports import free_port

if TYPE_CHECKING:
    from e2e.targets.local import LocalLab

PAGE = Path(__file__).with_name("page.html")
ROLE = "i"  # the lab's gateway role for the browser scenario
CLUSTER = "browser/relays"
SIDES = ("caller", "callee")
# transport key -> (listener protocol, URI scheme, ?transport=)
TRANSPORTS = {
    "udp": ("UDP", "turn", "udp"),
    "tcp": ("TCP", "turn", "tcp"),
    "tls": ("TLS", "turns", "tcp"),
    "video": ("UDP", "turn", "udp"),
}


def listener_name(transport: str, side: str) -> str:
    return f"browser/{transport}/{side}"


@dataclass(frozen=True)
class TurnServer:
    """One listener as the page's RTCIceServer sees it."""

    name: str
    protocol: str  # UDP | TCP | TLS
    host: str
    port: int
    uri: str
    username: str
    password: str

    def ice_server(self) -> dict[str, Any]:
        return {"urls": self.uri, "username": self.username, "credential": self.password}


def turn_servers(
    host: str, ports: dict[str, int], user: str, password: str
) -> dict[str, TurnServer]:
    out = {}
    for transport, (protocol, scheme, over) in TRANSPORTS.items():
        for side in SIDES:
            name = listener_name(transport, side)
            port = ports[name]
            uri = f"{scheme}:{host}:{port}?transport={over}"
            out[name] = TurnServer(name, protocol, host, port, uri, user, password)
    return out


def gateway_config(
    host: str, health: tuple[str, int], metrics_url: str, ports: dict[str, int], cert: SelfSigned
) -> str:
    """stunnerd.conf: every listener on `host` (the veth's host end), health and metrics on
    the lab's leased loopback address, one cluster holding `host` itself."""
    listeners = []
    for transport, (protocol, _, _) in TRANSPORTS.items():
        for side in SIDES:
            name = listener_name(transport, side)
            tls = (cert.cert_b64, cert.key_b64) if protocol == "TLS" else ("", "")
            listeners.append(gw.ListenerSpec(name, protocol, ports[name], [CLUSTER], *tls))
    config = gw.GatewayConfig(
        name="e2e-browser",
        address=health[0],
        health_port=health[1],
        metrics_url=metrics_url,
        listeners=listeners,
        clusters=[gw.ClusterSpec(CLUSTER, [host])],
    ).render()
    for listener in config["listeners"]:
        listener["address"] = host
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Session:
    """Everything a browser test needs while the module runs."""

    browser: Chromium
    servers: dict[str, TurnServer]
    net: BrowserNet | None
    veth_pcap: Path | None
    lo_pcap: Path | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def call(self, expression: str, timeout: float) -> dict[str, Any]:
        value = self.browser.evaluate(expression, timeout=timeout)
        assert isinstance(value, dict), value
        return value

    def data_channel(self, transport: str, count: int, size: int, timeout: float) -> dict[str, Any]:
        a, b = (self.servers[listener_name(transport, s)].ice_server() for s in SIDES)
        args = ", ".join(json.dumps(v) for v in (transport, a, b, count, size, timeout))
        expr = f"stunnerE2E.dataChannel({args})"
        result = self.call(expr, timeout + 10)
        self.results[transport] = result
        return result

    def video_call(self, seconds: float, timeout: float) -> dict[str, Any]:
        a, b = (self.servers[listener_name("video", s)].ice_server() for s in SIDES)
        args = ", ".join(json.dumps(v) for v in ("video", a, b, seconds, timeout))
        expr = f"stunnerE2E.videoCall({args})"
        result = self.call(expr, seconds + timeout + 10)
        self.results["video"] = result
        return result

    def hang_up(self) -> None:
        """getStats() and close every open call; the stats join that call's result."""
        for label, closing in self.call("stunnerE2E.hangUp()", 10).items():
            self.results[label].update(closing)


def external_servers(target: Target) -> dict[str, TurnServer]:
    """Both sides of each call on the one listener per transport the deployment offers."""
    by_transport = {"udp": "udp", "tcp": "tcp", "tls": "tls", "video": "udp"}
    out = {}
    for transport, protocol in by_transport.items():
        ep = target.listeners.get(protocol)
        if ep is None:
            continue
        _, scheme, over = TRANSPORTS[transport]
        uri = f"{scheme}:{ep.host}:{ep.port}?transport={over}"
        for side in SIDES:
            out[listener_name(transport, side)] = TurnServer(
                ep.name, protocol.upper(), ep.host, ep.port, uri, target.username, target.password
            )
    return out


@contextlib.contextmanager
def external_session(
    target: Target, binary: str, logdir: Path, cafile: str | None
) -> Iterator[Session]:
    """Chromium on this host's network, aimed at a deployment's listeners (`--browser`).

    No namespace and no capture: the browser must reach the deployment. TURNS is trusted
    through the SPKI of `--turn-ca`'s certificates, or verified against public roots.
    """
    servers = external_servers(target)
    trust = []
    if cafile:
        pem = Path(cafile).read_bytes()
        marker = b"-----END CERTIFICATE-----"
        trust = [spki_hash(block + marker) for block in pem.split(marker) if b"BEGIN" in block]
    with Chromium(
        binary,
        url=PAGE.resolve().as_uri(),
        trust_spki=trust,
        resolvable=sorted({s.host for s in servers.values()}),
        log_path=logdir / "chromium.log",
    ) as browser:
        wait_for_page(browser)
        yield Session(browser, servers, None, None, None)


def wait_for_page(browser: Chromium, timeout: float = 15.0) -> None:
    poll(
        lambda: browser.evaluate("typeof window.stunnerE2E"),
        lambda v: v == "object",
        timeout=timeout,
        what="the browser page loaded",
    )


@contextlib.contextmanager
def local_session(lab: LocalLab, binary: str, workdir: Path) -> Iterator[Session]:
    """Namespace, gateway `i` on the veth's host end, both captures, then the browser."""
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(browser_net())
        host = net.host_addr
        cert = self_signed(host)
        ports = {listener_name(t, s): free_port(host) for t in TRANSPORTS for s in SIDES}
        servers = turn_servers(host, ports, gw.USERNAME, gw.PASSWORD)
        veth_pcap = stack.enter_context(
            capture.capturing(net.host_if, "", workdir / "veth.pcap", logdir=lab.logdir)
        )
        # stunnerd's relay sockets talk to each other over lo, from and to the veth's address.
        lo_pcap = stack.enter_context(
            capture.capturing(
                "lo", f"udp and src host {host} and dst host {host}", workdir / "lo.pcap",
                logdir=lab.logdir,
            )
        )  # fmt: skip
        gateway = lab.gateways[ROLE]
        config = gateway_config(
            host, (gateway.address, gateway.health_port), lab.metrics_url(ROLE), ports, cert
        )
        # GSO off: on lo (and the veth) a capture sees a segmented send as one large packet,
        # and the checks count the datagrams in the captures (docs/stunnerd.md).
        stack.enter_context(lab.running(ROLE, config, env={"STUNNER_UDP_GSO": "0"}))
        browser = stack.enter_context(
            Chromium(
                binary,
                url=PAGE.resolve().as_uri(),
                trust_spki=[spki_hash(cert.cert_pem)],
                resolvable=[host],
                prefix=net.exec_prefix(),
                log_path=lab.logdir / "chromium.log",
            )
        )
        lab.wait_up(ROLE)  # scraped while the browser started
        wait_for_page(browser)
        yield Session(browser, servers, net, veth_pcap, lo_pcap)
