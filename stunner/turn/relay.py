"""The peer side of an allocation: datagrams from peers, back to the client.

``RelayProtocol.datagram_received`` is the hot path for peer-to-client traffic: no logging, no
tasks, no locks, and the only allocation is the outgoing frame.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct

from ..stun import Class, Message, Method
from .allocation import Allocation

_HEADER = struct.Struct("!HH").pack
_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def data_indication(peer: tuple[str, int], payload: bytes) -> bytes:
    """A Data indication carrying ``payload`` from ``peer`` (RFC 8656 11.4)."""
    message = Message(Method.DATA, Class.INDICATION)
    message.attributes["XOR-PEER-ADDRESS"] = [peer]
    message.attributes["DATA"] = payload
    return message.encode()


class RelayProtocol(asyncio.DatagramProtocol):
    """Receives on one relay socket and forwards admitted peers' datagrams to the client.

    The allocation's tables, stats and the client's send function are bound once here, so
    the per-datagram path below is attribute loads on ``self`` and no Python-level call.
    """

    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self.permissions = allocation.permissions
        self.peer_channels = allocation.peer_channels
        self.stats = allocation.stats
        self.stream = allocation.stream
        self.client_addr = allocation.client_addr
        transport = allocation.client_transport
        self.client_send = transport.write if allocation.stream else transport.sendto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Hot path: two dict lookups, one frame, counters, one send; no logging, no tasks.
        if addr[0] not in self.permissions:
            return  # RFC 8656 11.3: no permission, silently dropped and not counted
        size = len(data)
        channel = self.peer_channels.get(addr)
        if channel is not None:
            frame = _HEADER(channel, size) + data
            if self.stream:
                frame += _PADS[size & 3]
        else:
            frame = data_indication(addr, data)
        stats = self.stats
        stats.cluster_rx_packets += 1
        stats.cluster_rx_bytes += size
        stats.tx_packets += 1
        stats.tx_bytes += len(frame)
        if self.stream:
            self.client_send(frame)
        else:
            self.client_send(frame, self.client_addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors from peers (port unreachable) must not end the allocation."""


class RelayPortAllocator:
    """Binds relay sockets on ports from the listener's ``min_relay_port..max_relay_port``."""

    RANDOM_TRIES = 64

    def __init__(self, host: str, min_port: int, max_port: int) -> None:
        self.host = host
        self.min_port = min_port
        self.max_port = max_port

    def _candidates(self, even: bool) -> list[int]:
        ports = range(self.min_port, self.max_port + 1)
        if even:
            ports = range(self.min_port + (self.min_port & 1), self.max_port + 1, 2)
        if len(ports) <= 4 * self.RANDOM_TRIES:
            start = random.randrange(len(ports)) if len(ports) else 0
            return [ports[(start + i) % len(ports)] for i in range(len(ports))]
        return random.sample(ports, self.RANDOM_TRIES)

    def bind(self, even: bool = False) -> socket.socket | None:
        """A bound UDP socket, or None when no port in the range is free (answer 508)."""
        for port in self._candidates(even):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return None  # out of descriptors: 508, not a crash
                raise
            try:
                sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            sock.setblocking(False)
            return sock
        return None
