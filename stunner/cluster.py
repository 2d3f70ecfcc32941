"""Clusters: the peers a listener may relay to, and the admission check that keeps the relay
from becoming an open proxy into the cluster network (docs/security.md, "No open proxy").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Collection, Iterable

from .config import ClusterConfig
from .ipv4 import ipv4_packed

logger = logging.getLogger("stunner.cluster")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DNS_REFRESH_INTERVAL = 5.0

# Peers in these ranges are refused unless a cluster names them explicitly: loopback,
# link-local (cloud metadata at 169.254.169.254), multicast, "this network", reserved and
# broadcast. A catch-all such as 0.0.0.0/0 does not name them.
SPECIAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
        "::ffff:0:0/96",
    )
)


# Per IP version, in SPECIAL_NETWORKS order: (network, first, last) as integers, so that the
# check of each CreatePermission and ChannelBind peer is integer comparisons.
_SPECIAL_RANGES: dict[int, tuple[tuple[IPNetwork, int, int], ...]] = {
    version: tuple(
        (net, int(net.network_address), int(net.broadcast_address))
        for net in SPECIAL_NETWORKS
        if net.version == version
    )
    for version in (4, 6)
}


def special_network(addr: IPAddress) -> IPNetwork | None:
    """The special range ``addr`` falls in, if any."""
    value = int(addr)
    for net, first, last in _SPECIAL_RANGES[addr.version]:
        if first <= value <= last:
            return net
    return None


_CLASSIFIED_KEPT = 4096  # peer texts whose parse and special range are remembered
_classified_ips: dict[str, tuple[IPAddress, IPNetwork | None] | None] = {}


def _classified(ip: str) -> tuple[IPAddress, IPNetwork | None] | None:
    """``ip`` parsed, with the special range it falls in (None if it is no address).

    Both depend on the text alone, and each CreatePermission and ChannelBind asks for its
    peer, mostly one of a few media servers: remembered, in a table bounded like
    ``OwnListeners``' (cleared when full)."""
    if ip in _classified_ips:
        return _classified_ips[ip]
    addr = _parse_ip(ip)
    parsed = None if addr is None else (addr, special_network(addr))
    if len(_classified_ips) >= _CLASSIFIED_KEPT:
        _classified_ips.clear()
    _classified_ips[ip] = parsed
    return parsed


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # A dotted quad through inet_pton, which takes exactly what ipaddress takes for IPv4
    # (stunner.ipv4.ipv4_packed), at a fraction of its cost; the rest as before.
    packed = ipv4_packed(ip)
    if packed is not None:
        return ipaddress.IPv4Address(packed)
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


class Cluster:
    """A set of admitted peer addresses: exact IPs in a set, CIDRs in a short list."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.name = config.name
        self._hosts: frozenset[str] = frozenset()
        self._by_name: dict[str, set[str]] = {}  # STRICT_DNS: last good answer per name
        self._networks: tuple[IPNetwork, ...] = ()
        if config.type == "STATIC":
            self._set_endpoints(config.endpoints)
        self._task: asyncio.Task[None] | None = None

    def _set_endpoints(self, endpoints: Iterable[str]) -> None:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for endpoint in endpoints:
            net = ipaddress.ip_network(endpoint, strict=False)
            if net.num_addresses == 1:
                hosts.add(str(net.network_address))
            else:
                networks.append(net)
        self._hosts = frozenset(hosts)
        self._networks = tuple(networks)

    def names_explicitly(self, addr: IPAddress, special: IPNetwork, text: str = "") -> bool:
        """Listed as a host, or inside a CIDR that itself lies within ``special``; ``text``,
        when given, is ``str(addr)``."""
        if (text or str(addr)) in self._hosts:
            return True
        return any(
            net.version == special.version and addr in net and net.subnet_of(special)  # type: ignore[arg-type]
            for net in self._networks
        )

    def contains(self, ip: str) -> bool:
        if ip in self._hosts:
            return True
        if not self._networks:
            return False
        addr = _parse_ip(ip)
        return addr is not None and any(addr in net for net in self._networks)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The current admitted set, resolved names included, for logs and tests."""
        return tuple(sorted(self._hosts)) + tuple(str(n) for n in self._networks)

    # STRICT_DNS: names resolved in the background; a failing name keeps its last good set.

    def start(self) -> None:
        if self.config.type == "STRICT_DNS" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._resolve_forever())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def resolve_once(self) -> None:
        loop = asyncio.get_running_loop()
        resolved: dict[str, set[str]] = {}
        previous = self._by_name
        for name in self.config.endpoints:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
            except OSError as exc:
                kept = previous.get(name, set())
                logger.warning(
                    "cluster %s: cannot resolve %s (%s), keeping %d last known address(es)",
                    self.name,
                    name,
                    exc,
                    len(kept),
                )
                resolved[name] = kept
                continue
            resolved[name] = {str(info[4][0]) for info in infos}
        self._by_name = resolved
        self._set_endpoints(ip for ips in resolved.values() for ip in ips)

    async def _resolve_forever(self) -> None:
        while True:
            await self.resolve_once()
            await asyncio.sleep(DNS_REFRESH_INTERVAL)

    def __repr__(self) -> str:
        return f"cluster({self.name}, {self.config.type})"


class Admission:
    """Peer admission for one listener: the peer must be in a cluster the listener routes to.

    Special addresses (``SPECIAL_NETWORKS``) and the relay's own addresses need a cluster that
    names them explicitly, so that a broad CIDR never opens loopback, cloud metadata or the
    relay itself to clients.
    """

    def __init__(
        self,
        clusters: dict[str, Cluster],
        routes: Iterable[str],
        own_addresses: Collection[str] = (),
    ) -> None:
        self._clusters = clusters
        self.routes = tuple(routes)
        self.own_addresses = own_addresses  # shared and kept current by the daemon

    def admits(self, ip: str) -> bool:
        parsed = _classified(ip)
        if parsed is None:
            return False
        addr, special = parsed
        if special is None and ip in self.own_addresses:
            special = ipaddress.ip_network(ip)
        # ipaddress takes only canonical dotted quads (no leading zeros), so an IPv4 ``ip``
        # that parsed is str(addr) already.
        text = ip if isinstance(addr, ipaddress.IPv4Address) else ""
        for route in self.routes:
            cluster = self._clusters.get(route)
            if cluster is None:
                continue
            if cluster.names_explicitly(addr, special, text) if special else cluster.contains(ip):
                return True
        return False
