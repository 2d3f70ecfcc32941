"""The peer side of an allocation: datagrams from peers, back to the client.

``RelayReceiver.drain`` is the hot path for peer-to-client traffic (stunner.batchio has the
shared batch it reads into and writes the ChannelData headers into).
"""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections.abc import Iterator

from ..batchio import HEADROOM, SLOT, DatagramBatch, shared_batch
from ..stun import Address, Class, Message, Method
from .allocation import Allocation, ClientEndpoint

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

    The allocation's tables and the client's way out are bound once here, so the
    per-datagram loop in ``drain`` is local-variable work and C calls.
    """

    __slots__ = ("batch", "client", "peer_channels", "permissions", "sock", "stats")

    def __init__(
        self, allocation: Allocation, sock: socket.socket, batch: DatagramBatch | None = None
    ) -> None:
        self.sock = sock
        self.batch = batch or shared_batch()
        self.permissions = allocation.permissions
        self.peer_channels = allocation.peer_channels
        self.stats = allocation.stats
        # UDP: the listener's socket (ChannelData leaves by sendmmsg); TCP/TLS: the transport.
        self.client = ClientEndpoint(
            allocation.key,
            allocation.client_addr,
            allocation.client_transport,
            allocation.stream,
        )

    def drain(self) -> None:
        # Hot path: one recvmmsg for the wake-up; per datagram two dict lookups and the
        # ChannelData header written in front of the payload in its slot; one sendmmsg to
        # the client for the lot. No logging, no tasks, no locks. Counters stay in locals
        # and reach the stats once per wake-up.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return
        permissions = self.permissions
        peer_channels = self.peer_channels
        client = self.client
        stream = client.stream
        memory, view = batch.memory, batch.view
        client_sock = None if stream else client.transport
        starts: list[int] = []
        lengths: list[int] = []
        rx_packets = rx_bytes = tx_packets = tx_bytes = 0
        try:
            for i, (size, addr) in enumerate(zip(sizes, addresses, strict=True)):
                if addr[0] not in permissions:
                    continue  # RFC 8656 11.3: no permission, silently dropped, not counted
                rx_packets += 1
                rx_bytes += size
                offset = SLOT * i + HEADROOM
                channel = peer_channels.get(addr)
                if channel is None:
                    # Data indication: after the frames before it, in order.
                    packets, sent = batch.send(client_sock, client.addr, starts, lengths)
                    tx_packets += packets
                    tx_bytes += sent
                    frame = data_indication(addr, bytes(view[offset : offset + size]))
                elif stream:
                    _HEADER_INTO(memory, offset - 4, channel, size)
                    frame = bytes(view[offset - 4 : offset + size]) + _PADS[size & 3]
                else:
                    _HEADER_INTO(memory, offset - 4, channel, size)
                    starts.append(offset - 4)
                    lengths.append(4 + size)
                    continue
                if client.send(frame):
                    tx_packets += 1
                    tx_bytes += len(frame)
            packets, sent = batch.send(client_sock, client.addr, starts, lengths)
            tx_packets += packets
            tx_bytes += sent
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

    def _candidates(self, even: bool) -> Iterator[int]:
        """Ports to try, lazily: the first one nearly always binds, so a big range costs one
        random draw per allocation, not a sample of RANDOM_TRIES ports."""
        ports = range(self.min_port, self.max_port + 1)
        if even:
            ports = range(self.min_port + (self.min_port & 1), self.max_port + 1, 2)
        if not ports:
            return
        if len(ports) <= 4 * self.RANDOM_TRIES:
            # A small range: every port once, from a random start.
            start = random.randrange(len(ports))
            for i in range(len(ports)):
                yield ports[(start + i) % len(ports)]
            return
        for _ in range(self.RANDOM_TRIES):
            yield ports[random.randrange(len(ports))]

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
