"""Relaying and its counting, both directions, for datagram and stream clients.

Client to peer: ``DatagramIngress.drain`` reads a UDP listener socket, ``StreamIngress.frame``
takes one frame that a TCP/TLS connection has cut out of its byte stream, ``forward_send``
relays the payload of a Send indication. Peer to client: ``RelayReceiver.drain`` reads an
allocation's relay socket. The channel and permission rules come from ``Allocation``
(``routes``, ``permits``); STUN goes to ``TurnServer.handle_stun``, whose answers leave
through ``answer``.

Every traffic counter of ``ListenerStats`` is incremented in this module, where the decision
to relay, answer or drop is made; ``AllocationCounter`` counts the allocation totals from the
core's lifecycle events. Gauges are not kept here: the telemetry collector derives them from
the live tables when it is scraped.

The two drains and ``StreamIngress.frame`` are the hot path: local variables and C calls per
datagram, counters kept in locals and added once per wake-up; no logging, tasks, locks or
allocation beyond the frames themselves.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

from ..batchio import HEADROOM, SLOT, DatagramBatch, shared_batch
from ..stats import Drop, ListenerStats
from ..stun import Address, Class, Message, Method
from .allocation import Allocation
from .clients import Client, DatagramClient, StreamClient
from .events import AllocationObserver, DeleteReason

if TYPE_CHECKING:
    from .server import TurnServer

_CHANNEL_HEADER = struct.Struct("!HH").unpack_from
_HEADER_INTO = struct.Struct("!HH").pack_into


def data_indication(peer: Address, payload: bytes) -> bytes:
    """A Data indication carrying ``payload`` from ``peer`` (RFC 8656 11.4)."""
    message = Message(Method.DATA, Class.INDICATION)
    message.attributes["XOR-PEER-ADDRESS"] = [peer]
    message.attributes["DATA"] = payload
    return message.encode()


# client -> peer


class DatagramIngress:
    """Every datagram that reaches a UDP listener socket: ChannelData relayed here, STUN to
    the server (its answers go back out through the same socket)."""

    __slots__ = ("allocations", "batch", "handle_stun", "sock", "stats")

    def __init__(
        self, server: TurnServer, sock: socket.socket, batch: DatagramBatch | None = None
    ) -> None:
        self.allocations = server.allocations
        self.handle_stun = server.handle_stun
        self.stats = server.stats
        self.sock = sock
        self.batch = batch or shared_batch()

    def drain(self) -> None:
        # Hot path. One recvmmsg for the wake-up; every datagram counts as rx, malformed ones
        # included. ChannelData payloads stay in their slots and queue up while they go to
        # the same relay socket and peer; each run leaves with one sendmmsg (a burst from one
        # client is one run). Only STUN is copied out, after the queue has gone, so that a
        # Send indication cannot overtake ChannelData.
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
                    self.handle_stun(data, DatagramClient(self.sock, addr))
                    continue
                alloc = allocations.get(addr)
                if alloc is None:
                    continue
                channel, length = _CHANNEL_HEADER(memory, offset)
                to = alloc.routes.get(channel)
                if to is None or length > size - 4:
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


class StreamIngress:
    """The frames of one TCP/TLS connection, once the listener has cut them out of the byte
    stream: ChannelData relayed here, STUN to the server."""

    __slots__ = ("allocations", "client", "handle_stun", "stats")

    def __init__(self, server: TurnServer, client: StreamClient) -> None:
        self.allocations = server.allocations
        self.handle_stun = server.handle_stun
        self.stats = server.stats
        self.client = client

    def opened(self) -> None:
        """A connection was accepted (whether or not the listener then keeps it)."""
        self.stats.connections_total += 1

    def unframeable(self, size: int) -> None:
        """Bytes that start no STUN or ChannelData frame: one rx packet, then the listener
        closes the connection."""
        self.stats.rx_packets += 1
        self.stats.rx_bytes += size

    def frame(self, frame: bytes) -> None:
        # Stream hot path: one call per frame, two dict lookups and one sendto for ChannelData.
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += len(frame)
        if frame[0] & 0xC0 != 0x40:
            self.handle_stun(frame, self.client)
            return
        alloc = self.allocations.get(self.client)
        if alloc is None:
            return
        channel, length = _CHANNEL_HEADER(frame)
        to = alloc.routes.get(channel)
        if to is None or length > len(frame) - 4:
            return
        try:
            alloc.relay.sendto(frame[4 : 4 + length], to)  # type: ignore[union-attr]
        except OSError:
            return  # dropped by the kernel (full send buffer, unreachable): not relayed
        stats.cluster_tx_packets += 1
        stats.cluster_tx_bytes += length


def forward_send(
    alloc: Allocation,
    peer: Address,
    payload: bytes,
    stats: ListenerStats,
    own_listener: bool = False,
) -> None:
    """RFC 8656 11.2: relay a Send indication's DATA to a permitted peer, else drop it; never
    to one of stunnerd's own listeners (``own_listener``), whatever the permission."""
    relay = alloc.relay
    if relay is None or not alloc.permits(peer[0]):
        return
    if own_listener:
        stats.dropped_packets[Drop.OWN_LISTENER] += 1
        stats.dropped_bytes[Drop.OWN_LISTENER] += len(payload)
        return
    try:
        relay.sendto(payload, peer)
    except OSError:
        return  # dropped by the kernel: not relayed, not counted
    stats.cluster_tx_packets += 1
    stats.cluster_tx_bytes += len(payload)


# peer -> client


def answer(client: Client, data: bytes, stats: ListenerStats) -> bool:
    """Send one STUN answer to a client; counted as tx if the client's transport took it, else
    as a drop for the client's ``refusal`` reason."""
    if not client.answer(data):
        stats.dropped_packets[client.refusal] += 1
        stats.dropped_bytes[client.refusal] += len(data)
        return False
    stats.tx_packets += 1
    stats.tx_bytes += len(data)
    return True


class RelayReceiver:
    """Forwards what reaches one relay socket from permitted peers to the allocation's client.

    The allocation's tables and the client's way out are bound once here, so the
    per-datagram loop in ``drain`` is local-variable work and C calls.
    """

    __slots__ = (
        "batch",
        "client",
        "peer_routes",
        "permissions",
        "refusal",
        "send_run",
        "sock",
        "stats",
    )

    def __init__(
        self,
        allocation: Allocation,
        sock: socket.socket,
        stats: ListenerStats,
        batch: DatagramBatch | None = None,
    ) -> None:
        self.sock = sock
        self.batch = batch or shared_batch()
        self.permissions = allocation.permissions
        self.peer_routes = allocation.peer_routes
        self.stats = stats
        self.client = allocation.client
        # UDP: one sendmmsg through the listener socket; TCP/TLS: one write of the run.
        self.send_run = allocation.client.run_sender(self.batch)
        # What the client's transport refuses is dropped for this reason: a full bounded
        # write buffer (TCP/TLS), the kernel's refusal (UDP).
        self.refusal: Drop = allocation.client.refusal

    def drain(self) -> None:
        # Hot path: one recvmmsg for the wake-up; per datagram one dict lookup and the
        # ChannelData header written in front of the payload in its slot; the run goes to
        # the client in one call. No logging, no tasks, no locks. A frame the client's
        # transport refuses (a stream's bounded write buffer is full) is a drop, counted with
        # the peer datagram's payload bytes: cluster rx = listener tx + dropped, in packets.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return
        permissions = self.permissions
        peer_routes = self.peer_routes
        send_run = self.send_run
        memory, view = batch.memory, batch.view
        starts: list[int] = []
        lengths: list[int] = []
        rx_packets = rx_bytes = tx_packets = tx_bytes = 0
        run_bytes = drop_packets = drop_bytes = 0  # run_bytes: payload bytes of the run
        try:
            for i, (size, addr) in enumerate(zip(sizes, addresses, strict=True)):
                offset = SLOT * i + HEADROOM
                channel = peer_routes.get(addr)
                if channel is not None:
                    rx_packets += 1
                    rx_bytes += size
                    run_bytes += size
                    _HEADER_INTO(memory, offset - 4, channel, size)
                    starts.append(offset - 4)
                    lengths.append(4 + size)
                    continue
                if addr[0] not in permissions:  # Allocation.permits, inlined
                    continue  # RFC 8656 11.3: no permission, silently dropped, not counted
                rx_packets += 1
                rx_bytes += size
                # Data indication: after the frames before it, in order.
                run = len(starts)
                packets, sent = send_run(starts, lengths)
                tx_packets += packets
                tx_bytes += sent
                if packets != run:  # refused frames: what the run carried, minus what left
                    drop_packets += run - packets
                    drop_bytes += run_bytes - (sent - 4 * packets)
                run_bytes = 0
                frame = data_indication(addr, bytes(view[offset : offset + size]))
                if self.client.send(frame):
                    tx_packets += 1
                    tx_bytes += len(frame)
                else:
                    drop_packets += 1
                    drop_bytes += size
            run = len(starts)
            packets, sent = send_run(starts, lengths)
            tx_packets += packets
            tx_bytes += sent
            if packets != run:
                drop_packets += run - packets
                drop_bytes += run_bytes - (sent - 4 * packets)
        finally:
            stats = self.stats
            stats.cluster_rx_packets += rx_packets
            stats.cluster_rx_bytes += rx_bytes
            stats.tx_packets += tx_packets
            stats.tx_bytes += tx_bytes
            if drop_packets:
                stats.dropped_packets[self.refusal] += drop_packets
                stats.dropped_bytes[self.refusal] += drop_bytes


# allocation lifecycle


class AllocationCounter:
    """Counts the allocation totals from the core's lifecycle events, then passes each event
    on to ``then`` (the daemon's drain, say)."""

    __slots__ = ("stats", "then")

    def __init__(self, stats: ListenerStats, then: AllocationObserver | None = None) -> None:
        self.stats = stats
        self.then = then

    def created(self, alloc: Allocation) -> None:
        self.stats.cluster_connections_total += 1
        if isinstance(alloc.client, DatagramClient):
            self.stats.connections_total += 1  # a UDP client's allocation is its connection
        if self.then is not None:
            self.then.created(alloc)

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None:
        if self.then is not None:
            self.then.deleted(alloc, reason)
