"""One TURN allocation (RFC 8656 6): its client, relay socket, permissions and channels.

Lifetimes are deadlines on ``time.monotonic()``; the server's sweeper expires them, so the data
path only does dict lookups. The TURN rule for channels is kept here, once: ``routes`` (and
its reverse ``peer_routes``) hold the channels that may carry data now, bound *and* with a
permission for the peer's IP. Every change of permissions or channels goes through a method
that keeps them right, so the forwarding loops need one lookup per datagram.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from ..stun import Address
from ..udp import DatagramSocket
from .clients import Client


class Allocation:
    """State of one allocation; ``close()`` is safe to call more than once."""

    __slots__ = (
        "channel_expiry",
        "channels",
        "client",
        "closed",
        "created_at",
        "expires_at",
        "key",
        "next_expiry",
        "peer_channels",
        "peer_routes",
        "permissions",
        "relay",
        "relay_addr",
        "response",
        "routes",
        "transaction_id",
        "username",
    )

    def __init__(self, client: Client, username: str) -> None:
        self.client = client
        self.key: Hashable = client.key
        self.username = username
        self.relay_addr: Address = ("0.0.0.0", 0)
        self.relay: DatagramSocket | None = None
        self.expires_at = 0.0
        self.created_at = 0.0  # set by the lifecycle counter, for the lifetime histogram
        # peer IP -> expiry; RFC 8656 9: permissions ignore the peer port.
        self.permissions: dict[str, float] = {}
        # channel number <-> peer transport address as bound, with the channel's expiry.
        self.channels: dict[int, Address] = {}
        self.peer_channels: dict[Address, int] = {}
        self.channel_expiry: dict[int, float] = {}
        # No permission or channel expires before this (a lower bound: a refresh may push the
        # true one later), so the sweeper's ``expire`` is one comparison most seconds.
        self.next_expiry = math.inf
        # The channels open for data, both ways (see the module docstring). The relay
        # receiver binds these dicts once, so they are changed in place, never replaced.
        self.routes: dict[int, Address] = {}
        self.peer_routes: dict[Address, int] = {}
        # The Allocate transaction and its success response, for retransmissions (RFC 8656 7.2).
        self.transaction_id = b""
        self.response = b""
        self.closed = False

    @property
    def client_addr(self) -> Address:
        return self.client.addr

    def permits(self, ip: str) -> bool:
        """RFC 8656 9: traffic to and from a peer needs a permission for its IP."""
        return ip in self.permissions

    def permit(self, ip: str, expires_at: float) -> None:
        new = ip not in self.permissions
        self.permissions[ip] = expires_at
        if expires_at < self.next_expiry:
            self.next_expiry = expires_at
        if new:
            self._reroute()

    def revoke(self, ip: str) -> None:
        if self.permissions.pop(ip, None) is not None:
            self._reroute()

    def bind_channel(self, channel: int, peer: Address, expires_at: float) -> None:
        self.channels[channel] = peer
        self.peer_channels[peer] = channel
        self.channel_expiry[channel] = expires_at
        if expires_at < self.next_expiry:
            self.next_expiry = expires_at
        self._reroute()

    def unbind_channel(self, channel: int) -> None:
        peer = self.channels.pop(channel, None)
        self.channel_expiry.pop(channel, None)
        if peer is not None:
            self.peer_channels.pop(peer, None)
            self._reroute()

    def _reroute(self) -> None:
        """The channel rule, written once: a channel carries data while it is bound and its
        peer's IP has a permission (RFC 8656 9 and 12). Control path: O(channels)."""
        routes, peer_routes, permissions = self.routes, self.peer_routes, self.permissions
        routes.clear()
        peer_routes.clear()
        for channel, peer in self.channels.items():
            if peer[0] in permissions:
                routes[channel] = peer
                peer_routes[peer] = channel

    def expire(self, now: float) -> None:
        """Drop the permissions and channels whose time is up."""
        if now < self.next_expiry:
            return
        for ip in [ip for ip, t in self.permissions.items() if t <= now]:
            self.revoke(ip)
        for channel in [c for c, t in self.channel_expiry.items() if t <= now]:
            self.unbind_channel(channel)
        self.next_expiry = min(
            min(self.permissions.values(), default=math.inf),
            min(self.channel_expiry.values(), default=math.inf),
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.relay is not None:
            self.relay.close()
        self.permissions.clear()
        self.channels.clear()
        self.peer_channels.clear()
        self.channel_expiry.clear()
        self.routes.clear()
        self.peer_routes.clear()

    def __repr__(self) -> str:
        host, port = self.client.addr
        return f"allocation({host}:{port}->{self.relay_addr[1]})"
