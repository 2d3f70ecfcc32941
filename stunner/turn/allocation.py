"""One TURN allocation (RFC 8656 6): its relay socket, permissions and channels.

Lifetimes are deadlines on ``time.monotonic()``; the server's sweeper expires them, so the data
path only does dict lookups.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ..stats import ListenerStats
from ..stun import Address
from ..udp import DatagramSocket


@dataclass(slots=True)
class ClientEndpoint:
    """Where a request came from and how to answer it (and where an allocation's relayed
    frames go back to)."""

    key: Hashable  # the allocation table key: the client address (UDP) or the connection (TCP)
    addr: Address
    transport: Any
    stream: bool

    def send(self, data: bytes) -> bool:
        """Send one answer; False when the kernel dropped it (the client will retransmit)."""
        if self.stream:
            self.transport.write(data)
            return True
        try:
            self.transport.sendto(data, self.addr)
        except OSError:
            return False
        return True


class Allocation:
    """State of one allocation; ``close()`` is safe to call more than once."""

    __slots__ = (
        "channel_expiry",
        "channels",
        "client_addr",
        "client_transport",
        "closed",
        "expires_at",
        "key",
        "peer_channels",
        "permissions",
        "relay",
        "relay_addr",
        "response",
        "stats",
        "stream",
        "transaction_id",
        "username",
    )

    def __init__(
        self,
        key: Hashable,
        client_addr: Address,
        client_transport: Any,
        stream: bool,
        username: str,
        stats: ListenerStats,
    ) -> None:
        self.key = key
        self.client_addr = client_addr
        self.client_transport = client_transport
        self.stream = stream
        self.username = username
        self.stats = stats
        self.relay_addr: Address = ("0.0.0.0", 0)
        self.relay: DatagramSocket | None = None
        self.expires_at = 0.0
        # peer IP -> expiry; RFC 8656 9: permissions ignore the peer port.
        self.permissions: dict[str, float] = {}
        # channel number <-> peer transport address, both ways for O(1) lookups.
        self.channels: dict[int, Address] = {}
        self.peer_channels: dict[Address, int] = {}
        self.channel_expiry: dict[int, float] = {}
        # The Allocate transaction and its success response, for retransmissions (RFC 8656 7.2).
        self.transaction_id = b""
        self.response = b""
        self.closed = False

    def bind_channel(self, channel: int, peer: Address, expires_at: float) -> None:
        self.channels[channel] = peer
        self.peer_channels[peer] = channel
        self.channel_expiry[channel] = expires_at

    def unbind_channel(self, channel: int) -> None:
        peer = self.channels.pop(channel, None)
        self.channel_expiry.pop(channel, None)
        if peer is not None:
            self.peer_channels.pop(peer, None)

    def expire(self, now: float) -> None:
        """Drop the permissions and channels whose time is up."""
        for ip in [ip for ip, t in self.permissions.items() if t <= now]:
            del self.permissions[ip]
        for channel in [c for c, t in self.channel_expiry.items() if t <= now]:
            self.unbind_channel(channel)

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

    def __repr__(self) -> str:
        return f"allocation({self.client_addr[0]}:{self.client_addr[1]}->{self.relay_addr[1]})"
