"""Listener transports: the UDP, TCP and TLS sockets of one listener, feeding one ``TurnServer``.

A listener owns sockets and connections only. A UDP socket is drained by
``stunner.turn.datapath.DatagramIngress``; a TCP/TLS connection hands what it reads
(``StreamConnectionProtocol.data_received``) to its ``stunner.turn.datapath.StreamIngress``,
which cuts it into frames, and keeps an unfinished frame for the next read. Relaying, TURN
rules and counting live there; the open connections (and how many per source) live here, in
``StreamConnections``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import cast

from .auth import Authenticator
from .cluster import Admission
from .config import LimitsConfig, ListenerConfig
from .config.certs import server_context as ssl_context
from .ratelog import RateLimitedLog
from .stats import ListenerStats
from .tls import TlsServerProtocol
from .turn import AllocationObserver, DeleteReason, StreamClient, TurnServer
from .turn.datapath import AllocationCounter, DatagramIngress, StreamIngress
from .turn.limits import AmplificationGuard, Quotas
from .turn.own import OwnListeners
from .udp import DatagramSocket, set_buffers

logger = logging.getLogger("stunner.listener")
CLOSE_GRACE = 5.0  # seconds a stopped listener's connections get to flush before a reset
_refusals = RateLimitedLog(logger)  # connections closed at the cap, or for not reading


class StreamConnections:
    """The open TCP/TLS connections of one listener, and how many each source IP holds.

    A source is capped at ``cap()`` connections (``limits.tcp_connections_per_source``; 0: no
    cap), TLS connections still in their handshake included: ``admit`` runs at TCP accept for
    both protocols, ``add`` once a connection carries frames (the gauge counts those).
    """

    def __init__(self, cap: Callable[[], int] = lambda: 0) -> None:
        self.open: set[StreamConnectionProtocol] = set()
        self.per_source: dict[str, int] = {}
        self.cap = cap
        self.closed = False  # the listener stopped: late arrivals (a TLS handshake) close

    def __len__(self) -> int:
        return len(self.open)

    def admit(self, source: str) -> bool:
        """Count one more accepted connection for ``source``; False (and not counted) if the
        source already holds its cap. The caller closes a refused connection."""
        if self.closed:
            return False
        held = self.per_source.get(source, 0)
        cap = self.cap()
        if cap and held >= cap:
            _refusals.log(
                "connection_cap",
                source,
                "closing a TCP/TLS connection from %s: it holds %d, the cap "
                "(tcp_connections_per_source)",
                source,
                held,
            )
            return False
        self.per_source[source] = held + 1
        return True

    def release(self, source: str) -> None:
        """An admitted connection closed."""
        left = self.per_source.get(source, 1) - 1
        if left > 0:
            self.per_source[source] = left
        else:
            self.per_source.pop(source, None)

    def add(self, connection: StreamConnectionProtocol) -> None:
        self.open.add(connection)

    def remove(self, connection: StreamConnectionProtocol) -> None:
        self.open.discard(connection)

    def close_all(self) -> None:
        """Close every open connection (the listener stops): what is buffered is flushed, then
        a FIN, after a TLS close_notify; a client that has not read it all within
        CLOSE_GRACE seconds is reset. Their allocations are already gone with the server."""
        self.closed = True
        closing = [c.transport for c in self.open if c.transport is not None]
        for transport in closing:
            transport.close()
        if closing:
            asyncio.get_running_loop().call_later(CLOSE_GRACE, _abort_all, closing)


class StreamConnectionProtocol(asyncio.Protocol):
    """One TCP or TLS client connection: reframes the byte stream into STUN/ChannelData.

    Limits: connections per source IP, an idle timeout for connections without an
    allocation (slowloris byte drips included: only whole frames count as activity), and a
    maximum frame size.
    """

    def __init__(
        self,
        server: TurnServer,
        connections: StreamConnections | None = None,
        admitted: bool = False,
    ) -> None:
        self.server = server
        self.connections = connections if connections is not None else StreamConnections()
        # A TLS connection was admitted (counted per source) at TCP accept, by its outer
        # TlsServerProtocol, which also releases it.
        self.admitted = admitted
        self.counted = False
        self.buffer = bytearray()
        self.client: StreamClient | None = None
        self.ingress: StreamIngress | None = None
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.last_frame = 0.0
        self.clock: Callable[[], float] = time.monotonic  # the loop's, once connected
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        limits = self.server.limits
        self.client = StreamClient(
            stream,
            (peer[0], peer[1]),
            limits.stream_write_buffer,
            self._stalled,
        )
        self.ingress = StreamIngress(self.server, self.client)
        self.ingress.opened()
        self.source = peer[0]
        if not self.admitted:
            if not self.connections.admit(self.source):
                stream.abort()
                return
            self.counted = True
        elif self.connections.closed:  # a TLS handshake that ended after the listener stopped
            transport.close()
            return
        self.connections.add(self)
        loop = asyncio.get_running_loop()
        self.clock = loop.time  # bound once: each read that brings a frame asks it
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

    def _stalled(self) -> None:
        """The client let its write buffer fill with STUN answers: it does not read."""
        _refusals.log(
            "stream_stalled",
            self.source,
            "closing a TCP/TLS connection from %s: it does not read its answers "
            "(write buffer past stream_write_buffer)",
            self.source,
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self.connections.remove(self)
        if self.counted:
            self.counted = False
            self.connections.release(self.source)
        if self.client is not None:
            self.server.connection_closed(self.client)
            self.client.release()  # no cycles left: freed by reference counting

    def data_received(self, data: bytes) -> None:
        # Stream hot path: the ingress cuts and relays the frames straight out of ``data``;
        # only a frame split across reads goes through the buffer.
        if self.buffer:
            self.buffer += data
            data = bytes(self.buffer)
            self.buffer.clear()
        assert self.ingress is not None
        pos = self.ingress.frames(data, self.server.limits.max_message_size)
        if pos < 0:  # bytes that start no frame: counted, and the stream cannot resync
            assert self.transport is not None
            self.transport.close()
            return
        if pos:
            self.last_frame = self.clock()
        if pos < len(data):
            self.buffer += data[pos:]


def _abort_all(transports: list[asyncio.Transport]) -> None:
    """Reset what a close could not end (no-op on a connection that has closed)."""
    for transport in transports:
        transport.abort()


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
        own_listeners: OwnListeners | None = None,
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
            own_listeners=own_listeners,
        )
        self.streams = StreamConnections(lambda: self.server.limits.tcp_connections_per_source)
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
            # One socket carries every client's traffic: absorb bursts as coturn does.
            set_buffers(sock)
            try:
                sock.bind((cfg.address, cfg.port))
            except OSError:
                sock.close()
                raise
            ingress = DatagramIngress(self.server, sock)
            self._udp = DatagramSocket(sock, ingress.drain, before_close=ingress.flush)
        elif cfg.protocol in ("TCP", "TLS"):

            def plain() -> asyncio.Protocol:
                return StreamConnectionProtocol(self.server, self.streams)

            def inner() -> asyncio.Protocol:
                return StreamConnectionProtocol(self.server, self.streams, admitted=True)

            factory: Callable[[], asyncio.Protocol] = plain
            if cfg.protocol == "TLS":
                context = ssl_context(cfg.cert, cfg.key)
                refusals = self.server.refusals

                def factory() -> asyncio.Protocol:
                    # TLS on the plain transport (stunner.tls), the current limits per connection;
                    # the per-source cap counts pending handshakes too.
                    timeout = self.server.limits.tls_handshake_timeout
                    return TlsServerProtocol(
                        context, inner, timeout, refusals.tls_failed, self.streams
                    )

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
        """Delete the allocations, close the sockets and every accepted TCP/TLS connection
        (a restart too: the client sees its connection end and reconnects)."""
        self.server.close(reason)
        if self._udp is not None:
            self._udp.close()  # at once: a restart on the same port can bind
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        self.streams.close_all()

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
