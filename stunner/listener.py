"""Listener transports: the UDP, TCP and TLS sockets of one listener, feeding one ``TurnServer``.

A listener owns sockets and framing only. A UDP socket is drained by
``stunner.turn.datapath.DatagramIngress``; a TCP/TLS connection cuts its byte stream into
frames (``StreamConnectionProtocol.data_received``) and hands each to its
``stunner.turn.datapath.StreamIngress``. Relaying, TURN rules and counting live there; the
open connections (and how many per source) live here, in ``StreamConnections``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from .auth import Authenticator
from .cluster import Admission
from .config import LimitsConfig, ListenerConfig
from .config.certs import server_context as ssl_context
from .stats import ListenerStats
from .stun.channel import stream_frame_length
from .tls import TlsServerProtocol
from .turn import AllocationObserver, DeleteReason, StreamClient, TurnServer
from .turn.datapath import AllocationCounter, DatagramIngress, StreamIngress
from .turn.limits import AmplificationGuard, Quotas
from .udp import DatagramSocket

logger = logging.getLogger("stunner.listener")

LISTENER_SOCKET_BUFFER = 4 * 1024 * 1024


class StreamConnections:
    """The open TCP/TLS connections of one listener, and how many each source IP holds."""

    def __init__(self) -> None:
        self.open: set[StreamConnectionProtocol] = set()
        self.per_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.open)

    def add(self, connection: StreamConnectionProtocol, source: str, cap: int) -> bool:
        """Register a new connection; False if its source is over ``cap`` (0: no cap)."""
        self.open.add(connection)
        held = self.per_source[source] = self.per_source.get(source, 0) + 1
        return not cap or held <= cap

    def remove(self, connection: StreamConnectionProtocol, source: str) -> None:
        self.open.discard(connection)
        left = self.per_source.get(source, 1) - 1
        if left > 0:
            self.per_source[source] = left
        else:
            self.per_source.pop(source, None)


class StreamConnectionProtocol(asyncio.Protocol):
    """One TCP or TLS client connection: reframes the byte stream into STUN/ChannelData.

    Limits: connections per source IP, an idle timeout for connections without an
    allocation (slowloris byte drips included: only whole frames count as activity), and a
    maximum frame size.
    """

    def __init__(self, server: TurnServer, connections: StreamConnections | None = None) -> None:
        self.server = server
        self.connections = connections if connections is not None else StreamConnections()
        self.buffer = bytearray()
        self.client: StreamClient | None = None
        self.ingress: StreamIngress | None = None
        self.frame_received: Callable[[bytes], None] = _not_connected
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.last_frame = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client = StreamClient(self.transport, (peer[0], peer[1]))  # type: ignore[arg-type]
        self.ingress = StreamIngress(self.server, self.client)
        self.frame_received = self.ingress.frame
        self.ingress.opened()
        self.source = peer[0]
        limits = self.server.limits
        if not self.connections.add(self, self.source, limits.tcp_connections_per_source):
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
        if timeout and idle >= timeout and self.client not in self.server.allocations:
            self.transport.close()
            return
        self._idle_timer = loop.call_later(
            max(timeout - idle, 1.0) if timeout else 60.0, self._check_idle
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self.connections.remove(self, self.source)
        if self.client is not None:
            self.server.connection_closed(self.client)

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
        frame_received = self.frame_received
        while size - pos >= 4:
            total = stream_frame_length(data, pos)
            if total == 0 or total > max_frame:
                # Not STUN or ChannelData, or too large: the stream cannot be resynchronised.
                assert self.ingress is not None and self.transport is not None
                self.ingress.unframeable(size - pos, oversize=total > max_frame)
                self.transport.close()
                return
            if size - pos < total:
                break
            frame_received(data if total == size else data[pos : pos + total])
            pos += total
        if pos:
            self.last_frame = asyncio.get_running_loop().time()
        if pos < size:
            self.buffer += data[pos:]


def _not_connected(frame: bytes) -> None:
    raise RuntimeError("data before connection_made")


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
        events: AllocationObserver | None = None,
        guard: AmplificationGuard | None = None,
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
            observer=AllocationCounter(stats, then=events),
            guard=guard,
        )
        self.streams = StreamConnections()
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
            self._udp = DatagramSocket(sock, DatagramIngress(self.server, sock).drain)
        elif cfg.protocol in ("TCP", "TLS"):

            def plain() -> asyncio.Protocol:
                return StreamConnectionProtocol(self.server, self.streams)

            factory: Callable[[], asyncio.Protocol] = plain
            if cfg.protocol == "TLS":
                context = ssl_context(cfg.cert, cfg.key)
                refusals = self.server.refusals

                def factory() -> asyncio.Protocol:
                    # TLS on the plain transport (stunner.tls), the current limits per connection.
                    timeout = self.server.limits.tls_handshake_timeout
                    return TlsServerProtocol(context, plain, timeout, refusals.tls_failed)

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

    async def stop(self, reason: DeleteReason = DeleteReason.LISTENER_REMOVED) -> None:
        self.server.close(reason)
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
