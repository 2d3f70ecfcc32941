"""Listener transports: UDP, TCP and TLS sockets feeding one ``TurnServer``.

``UdpListenerReceiver.drain`` (UDP) and ``_frame_received`` (TCP/TLS) are the client-to-peer
hot path: count the frame, and if it is ChannelData forward it with two dict lookups and one
``sendto``. No logging, tasks or locks on that path; STUN goes to the server's control path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct
from collections.abc import Callable, Hashable

from .auth import Authenticator
from .batchio import HEADROOM, SLOT, DatagramBatch, shared_batch
from .cluster import Admission
from .config import LimitsConfig, ListenerConfig
from .config.certs import server_context as ssl_context
from .stats import ListenerStats
from .stun import Address
from .stun.channel import stream_frame_length
from .tls import TlsServerProtocol
from .turn import Allocation, ClientEndpoint, TurnServer
from .turn.limits import Quotas
from .udp import DatagramSocket

logger = logging.getLogger("stunner.listener")

LISTENER_SOCKET_BUFFER = 4 * 1024 * 1024

_CHANNEL_HEADER = struct.Struct("!HH").unpack_from


def forward_channel_data(
    allocations: dict[Hashable, Allocation], key: Hashable, data: bytes, stats: ListenerStats
) -> None:
    """Relay one ChannelData frame from a TCP/TLS client to its peer (RFC 8656 12.5), or drop
    it silently. (UDP does the same in ``UdpListenerReceiver.drain``, batched.)"""
    alloc = allocations.get(key)
    if alloc is None:
        return
    channel, length = _CHANNEL_HEADER(data)
    peer = alloc.channels.get(channel)
    if peer is None or length > len(data) - 4 or peer[0] not in alloc.permissions:
        return
    try:
        alloc.relay.sendto(data[4 : 4 + length], peer)  # type: ignore[union-attr]
    except OSError:
        return  # dropped by the kernel (full send buffer, unreachable): not relayed
    stats.cluster_tx_packets += 1
    stats.cluster_tx_bytes += length


class UdpListenerReceiver:
    """Every datagram that reaches a UDP listener socket: ChannelData here, STUN to the server.

    Answers go out through the socket itself (``ClientEndpoint.send`` calls its ``sendto``).
    """

    __slots__ = ("allocations", "batch", "server", "sock", "stats")

    def __init__(
        self, server: TurnServer, sock: socket.socket, batch: DatagramBatch | None = None
    ) -> None:
        self.server = server
        self.stats = server.stats
        self.allocations = server.allocations
        self.sock = sock
        self.batch = batch or shared_batch()

    def drain(self) -> None:
        # Hot path. One recvmmsg for the wake-up; every datagram counts, malformed ones
        # included. ChannelData payloads stay in their slots and queue up while they go to
        # the same relay socket and peer; each run leaves with one sendmmsg (a burst from one
        # client is one run). Only STUN is copied out, after the queue has gone, so that a
        # Send indication cannot overtake ChannelData. Counters are added once per wake-up.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return
        allocations = self.allocations
        memory, view = batch.memory, batch.view
        relay: socket.socket | None = None
        peer: Address | None = None
        starts: list[int] = []
        lengths: list[int] = []
        tx_packets = tx_bytes = 0
        try:
            for i, (size, addr) in enumerate(zip(sizes, addresses, strict=True)):
                offset = SLOT * i + HEADROOM
                if size < 4 or memory[offset] & 0xC0 != 0x40:
                    packets, sent = batch.send(relay, peer, starts, lengths)
                    tx_packets += packets
                    tx_bytes += sent
                    data = bytes(view[offset : offset + size])
                    self.server.handle_stun(data, ClientEndpoint(addr, addr, self.sock, False))
                    continue
                alloc = allocations.get(addr)
                if alloc is None:
                    continue
                channel, length = _CHANNEL_HEADER(memory, offset)
                to = alloc.channels.get(channel)
                if to is None or length > size - 4 or to[0] not in alloc.permissions:
                    continue
                sock = alloc.relay.sock  # type: ignore[union-attr]
                if sock is not relay or to is not peer:
                    packets, sent = batch.send(relay, peer, starts, lengths)
                    tx_packets += packets
                    tx_bytes += sent
                    relay, peer = sock, to
                starts.append(offset + 4)
                lengths.append(length)
            packets, sent = batch.send(relay, peer, starts, lengths)
            tx_packets += packets
            tx_bytes += sent
        finally:
            stats = self.stats
            stats.rx_packets += len(sizes)
            stats.rx_bytes += sum(sizes)
            stats.cluster_tx_packets += tx_packets
            stats.cluster_tx_bytes += tx_bytes


class StreamConnectionProtocol(asyncio.Protocol):
    """One TCP or TLS client connection: reframes the byte stream into STUN/ChannelData.

    Limits: connections per source IP, an idle timeout for connections without an
    allocation (slowloris byte drips included: only whole frames count as activity), and a
    maximum frame size.
    """

    def __init__(self, server: TurnServer) -> None:
        self.server = server
        self.stats = server.stats
        self.allocations = server.allocations
        self.buffer = bytearray()
        self.endpoint: ClientEndpoint | None = None
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.last_frame = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.endpoint = ClientEndpoint(self, (peer[0], peer[1]), transport, True)
        self.stats.connections += 1
        self.stats.connections_total += 1
        self.source = peer[0]
        sources = self.server.stream_sources
        sources[self.source] = sources.get(self.source, 0) + 1
        limits = self.server.limits
        if limits.tcp_connections_per_source and (
            sources[self.source] > limits.tcp_connections_per_source
        ):
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self.last_frame = loop.time()
        if limits.tcp_idle_timeout:
            self._idle_timer = loop.call_later(limits.tcp_idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        assert self.transport is not None
        timeout = self.server.limits.tcp_idle_timeout
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_frame
        if timeout and idle >= timeout and self not in self.allocations:
            self.transport.close()
            return
        self._idle_timer = loop.call_later(
            max(timeout - idle, 1.0) if timeout else 60.0, self._check_idle
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections -= 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        left = self.server.stream_sources.get(self.source, 1) - 1
        if left > 0:
            self.server.stream_sources[self.source] = left
        else:
            self.server.stream_sources.pop(self.source, None)
        self.server.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        # Stream hot path: frames are cut straight out of ``data``; only a frame split across
        # reads goes through the buffer.
        if self.buffer:
            self.buffer += data
            data = bytes(self.buffer)
            self.buffer.clear()
        size = len(data)
        pos = 0
        max_frame = self.server.limits.max_message_size
        while size - pos >= 4:
            total = stream_frame_length(data, pos)
            if total == 0 or total > max_frame:
                # Not STUN or ChannelData, or too large: the stream cannot be resynchronised.
                self.stats.rx_packets += 1
                self.stats.rx_bytes += size - pos
                assert self.transport is not None
                self.transport.close()
                return
            if size - pos < total:
                break
            self._frame_received(data if total == size else data[pos : pos + total])
            pos += total
        if pos:
            self.last_frame = asyncio.get_running_loop().time()
        if pos < size:
            self.buffer += data[pos:]

    def _frame_received(self, frame: bytes) -> None:
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += len(frame)
        if frame[0] & 0xC0 == 0x40:
            forward_channel_data(self.allocations, self, frame, stats)
            return
        assert self.endpoint is not None
        self.server.handle_stun(frame, self.endpoint)


def decode_pem(value: bytes | str) -> bytes:
    """Accept PEM, or base64 of PEM as upstream's config carries it."""
    raw = value.encode() if isinstance(value, str) else value
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    return base64.b64decode(raw)


class Listener:
    """A configured listener: its sockets, its TURN server and its stats object."""

    def __init__(
        self,
        config: ListenerConfig,
        stats: ListenerStats,
        authenticator: Authenticator,
        admission: Admission,
        reuse_port: bool = False,
        limits: LimitsConfig | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.stats = stats
        self.admission = admission
        self.reuse_port = reuse_port
        relay_host = config.address
        self.server = TurnServer(
            config.name,
            stats,
            authenticator,
            admission.admits,
            relay_host,
            config.min_relay_port,
            config.max_relay_port,
            limits=limits,
            quotas=quotas,
        )
        self._udp: DatagramSocket | None = None
        self._tcp: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"listener({self.name})"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.protocol == "UDP":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # No SO_REUSEADDR: on UDP it would let a second stunnerd bind the same port
            # silently. Workers share the port on purpose, with SO_REUSEPORT.
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # One socket carries every client's traffic: absorb bursts as coturn does (the
            # kernel caps these at net.core.[rw]mem_max).
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, LISTENER_SOCKET_BUFFER)
            try:
                sock.bind((cfg.address, cfg.port))
            except OSError:
                sock.close()
                raise
            self._udp = DatagramSocket(sock, UdpListenerReceiver(self.server, sock).drain)
        elif cfg.protocol in ("TCP", "TLS"):

            def plain() -> asyncio.Protocol:
                return StreamConnectionProtocol(self.server)

            factory: Callable[[], asyncio.Protocol] = plain
            if cfg.protocol == "TLS":
                context = ssl_context(cfg.cert, cfg.key)

                def factory() -> asyncio.Protocol:
                    # TLS on the plain transport (stunner.tls), the current limits per connection.
                    timeout = self.server.limits.tls_handshake_timeout
                    return TlsServerProtocol(context, plain, timeout)

            self._tcp = await loop.create_server(
                factory,
                cfg.address,
                cfg.port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
            )
        else:
            raise OSError(f"{cfg.protocol} listeners are not supported by this stunnerd")
        self.server.start()
        logger.info(
            "%r: serving %s on %s:%d (relay ports %d-%d)",
            self,
            cfg.protocol,
            cfg.address,
            cfg.port,
            cfg.min_relay_port,
            cfg.max_relay_port,
        )

    def stop_accepting(self) -> None:
        """Graceful shutdown: existing allocations keep relaying, new Allocates get 508."""
        self.server.accepting = False

    async def stop(self) -> None:
        self.server.close()
        if self._udp is not None:
            self._udp.close()  # at once: a restart on the same port can bind
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    def update_in_place(self, config: ListenerConfig, admission: Admission) -> None:
        """Apply changes that keep the sockets: routes and relay port range."""
        self.config = config
        self.admission = admission
        self.server.admits = admission.admits
        self.server.set_relay_ports(config.address, config.min_relay_port, config.max_relay_port)
        self.server.revoke_unadmitted()


def needs_restart(old: ListenerConfig, new: ListenerConfig) -> bool:
    """Socket-level changes need new sockets; routes and relay ports do not."""
    return (old.protocol, old.address, old.port, old.cert, old.key) != (
        new.protocol,
        new.address,
        new.port,
        new.cert,
        new.key,
    )
