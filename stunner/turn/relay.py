"""The peer side of an allocation: datagrams from peers, back to the client.

``RelayReceiver.drain`` is the hot path for peer-to-client traffic (see stunner.udp for the
shared receive buffer it writes the ChannelData header into).
"""

from __future__ import annotations

import errno
import random
import socket
import struct

from ..stun import Address, Class, Message, Method
from ..udp import BATCH, PAYLOAD_VIEW, RECEIVE_BUFFER, RECEIVE_VIEW
from .allocation import Allocation

_HEADER_INTO = struct.Struct("!HH").pack_into
_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def data_indication(peer: Address, payload: bytes) -> bytes:
    """A Data indication carrying ``payload`` from ``peer`` (RFC 8656 11.4)."""
    message = Message(Method.DATA, Class.INDICATION)
    message.attributes["XOR-PEER-ADDRESS"] = [peer]
    message.attributes["DATA"] = payload
    return message.encode()


class RelayReceiver:
    """Forwards what reaches one relay socket from admitted peers to the client.

    The allocation's tables, stats and the client's send function are bound once here, so
    the per-datagram loop in ``drain`` is local-variable work and C calls.
    """

    __slots__ = (
        "_recvfrom_into",
        "client_addr",
        "client_send",
        "peer_channels",
        "permissions",
        "stats",
        "stream",
    )

    def __init__(self, allocation: Allocation, sock: socket.socket) -> None:
        self._recvfrom_into = sock.recvfrom_into
        self.permissions = allocation.permissions
        self.peer_channels = allocation.peer_channels
        self.stats = allocation.stats
        self.stream = allocation.stream
        self.client_addr = allocation.client_addr
        transport = allocation.client_transport
        # UDP: the listener socket's own sendto, which raises OSError when the kernel drops.
        self.client_send = transport.write if allocation.stream else transport.sendto

    def drain(self) -> None:
        # Hot path, per datagram: two dict lookups, the ChannelData header written in front
        # of the payload in the shared buffer, one send. No logging, no tasks, no locks; the
        # only objects made are views (and, for TCP/TLS clients, the frame the transport
        # keeps). Counters stay in locals and reach the stats once per wake-up.
        recvfrom_into = self._recvfrom_into
        permissions = self.permissions
        peer_channels = self.peer_channels
        stream = self.stream
        client_send = self.client_send
        client_addr = self.client_addr
        rx_packets = rx_bytes = tx_packets = tx_bytes = 0
        try:
            for _ in range(BATCH):
                try:
                    size, addr = recvfrom_into(PAYLOAD_VIEW)
                except OSError:
                    return  # drained (EAGAIN), or a socket error this read has cleared
                if addr[0] not in permissions:
                    continue  # RFC 8656 11.3: no permission, silently dropped, not counted
                rx_packets += 1
                rx_bytes += size
                channel = peer_channels.get(addr)
                frame: bytes | memoryview
                if channel is None:
                    frame = data_indication(addr, bytes(PAYLOAD_VIEW[:size]))
                else:
                    _HEADER_INTO(RECEIVE_BUFFER, 0, channel, size)
                    frame = RECEIVE_VIEW[: 4 + size]
                    if stream:
                        frame = bytes(frame) + _PADS[size & 3]
                if stream:
                    client_send(frame)
                else:
                    try:
                        client_send(frame, client_addr)
                    except OSError:
                        continue  # dropped by the kernel: not sent, not counted
                tx_packets += 1
                tx_bytes += len(frame)
        finally:
            stats = self.stats
            stats.cluster_rx_packets += rx_packets
            stats.cluster_rx_bytes += rx_bytes
            stats.tx_packets += tx_packets
            stats.tx_bytes += tx_bytes


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
