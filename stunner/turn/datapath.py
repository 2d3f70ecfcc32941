"""Relaying and its counting, both directions, for datagram and stream clients.

Client to peer: ``DatagramIngress.drain`` reads a UDP listener socket, ``StreamIngress.frames``
cuts what a TCP/TLS connection read into frames and relays them, ``forward_send``
relays the payload of a Send indication. Peer to client: ``RelayReceiver.drain`` reads an
allocation's relay socket, ``StreamEgress.drain`` when its client is a TCP/TLS connection
(``relay_drain`` picks). The channel and permission rules come from ``Allocation``
(``routes``, ``permits``); STUN goes to ``TurnServer.handle_stun``, whose answers leave
through ``answer``.

Every traffic counter of ``ListenerStats`` is incremented in this module, where the decision
to relay, answer or drop is made; ``AllocationCounter`` counts the allocation totals from the
core's lifecycle events. Gauges are not kept here: the telemetry collector derives them from
the live tables when it is scraped.

The drains and ``StreamIngress.frames`` are the hot path: local variables and C calls per
datagram, counters kept in locals and added once per wake-up; no logging, tasks, locks or
allocation beyond the frames themselves.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..batchio import BATCH, NATIVE, OFFSETS, SLOT, DatagramBatch, Gather, shared_batch, sockaddr
from ..stats import DELETE_REASONS, DURATION_BUCKETS, Drop, ListenerStats
from ..stun import Address, Class, Message, Method
from .allocation import Allocation
from .clients import STREAM_PADS, Client, DatagramClient, StreamClient
from .events import AllocationObserver, DeleteReason

if TYPE_CHECKING:
    from .server import TurnServer

_CHANNEL_HEADER = struct.Struct("!HH").unpack_from
RUN_BYTES = BATCH * SLOT  # a run of stream frames is copied into the batch memory: it fits
NO_PERMISSION, NO_CHANNEL, MALFORMED = Drop.NO_PERMISSION, Drop.NO_CHANNEL, Drop.MALFORMED
SEND_ERROR, OVERSIZE = Drop.SEND_ERROR, Drop.OVERSIZE
# The largest peer datagram that still fits a ChannelData datagram to a UDP client (IPv4).
MAX_UDP_PAYLOAD = 65507
MAX_DATAGRAM_RELAYED = MAX_UDP_PAYLOAD - 4
_HEADER_INTO = struct.Struct("!HH").pack_into
LISTENER_READS = 4  # full batches a UDP listener socket's wake-up reads at most


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

    __slots__ = ("allocations", "batch", "handle_stun", "outbox", "sock", "stats")

    def __init__(
        self, server: TurnServer, sock: socket.socket, batch: DatagramBatch | None = None
    ) -> None:
        self.allocations = server.allocations
        self.handle_stun = server.handle_stun
        self.stats = server.stats
        self.sock = sock
        self.batch = batch or shared_batch()
        # The peer-to-client datagrams of this listener's allocations leave together, once
        # per loop turn (ClientOutbox); outside a running loop (tests), one by one.
        self.outbox = ClientOutbox.for_listener(sock, self.stats)

    def flush(self) -> None:
        """Send what waits in the outbox now (the listener socket is about to close)."""
        if self.outbox is not None:
            self.outbox.flush()

    def drain(self) -> None:
        """The listener socket is readable: read up to LISTENER_READS full batches.

        Why more than one: this one socket carries every client's traffic, while each relay
        socket carries one allocation's. With one batch per wake-up, many allocations meant
        many relay-socket wake-ups of a datagram or two, each at a fixed cost; a longer turn
        here lets the relay sockets gather bigger batches meanwhile. The bound keeps the
        relay sockets (the echoes) from waiting behind an endless listener queue.
        """
        drain_batch = self._drain_batch
        for _ in range(LISTENER_READS):
            if drain_batch() < BATCH:  # the socket is empty
                return

    def _drain_batch(self) -> int:
        # Hot path. One recvmmsg per batch; every datagram counts as rx, malformed ones
        # included. ChannelData payloads stay in their slots and queue up while they go to
        # the same relay socket and peer; each run leaves with one sendmmsg (a burst from one
        # client is one run). Only STUN is copied out, after the queue has gone, so that a
        # Send indication cannot overtake ChannelData. Drops are counted in locals, by
        # reason, and added once at the end, like rx and tx; what was queued is counted per
        # run (``len(starts)``, ``sum(lengths)``), not per datagram. No logging, no locks, no
        # allocation beyond the run lists and the STUN copies.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return 0
        allocations = self.allocations
        memory, view, send = batch.memory, batch.view, batch.send
        relay: socket.socket | None = None
        peer: Address | None = None
        starts: list[int] = []
        lengths: list[int] = []
        tx_packets = tx_bytes = queued = queued_bytes = 0
        no_channel = no_channel_bytes = no_permission = no_permission_bytes = 0
        malformed = malformed_bytes = 0
        try:
            # zip without strict=: a keyword argument costs more than the loop body (the
            # lists are the same length, from one receive).
            for offset, size, addr in zip(OFFSETS, sizes, addresses):  # noqa: B905
                if size < 4 or memory[offset] & 0xC0 != 0x40:
                    queued += len(starts)
                    queued_bytes += sum(lengths)
                    packets, sent = send(relay, peer, starts, lengths)
                    tx_packets += packets
                    tx_bytes += sent
                    data = bytes(view[offset : offset + size])
                    self.handle_stun(data, DatagramClient(self.sock, addr, self.outbox))
                    continue
                alloc = allocations.get(addr)
                if alloc is None:
                    no_channel += 1
                    no_channel_bytes += size
                    continue
                channel, length = _CHANNEL_HEADER(memory, offset)
                to = alloc.routes.get(channel)
                if to is None:
                    if channel in alloc.channels:  # bound, but its peer's permission is gone
                        no_permission += 1
                        no_permission_bytes += size
                    else:
                        no_channel += 1
                        no_channel_bytes += size
                    continue
                if length > size - 4:
                    malformed += 1
                    malformed_bytes += size
                    continue
                sock = alloc.relay.sock  # type: ignore[union-attr]
                if sock is not relay or to is not peer:
                    # The run so far leaves before this one starts. A run of one (clients
                    # that interleave) is one sendto here, without the call into the batch.
                    if len(starts) == 1:
                        start, last = starts.pop(), lengths.pop()
                        queued += 1
                        queued_bytes += last
                        try:
                            relay.sendto(memory[start : start + last], peer)  # type: ignore[union-attr,arg-type]
                        except OSError:
                            pass  # the kernel refused it: a send error, counted at the end
                        else:
                            tx_packets += 1
                            tx_bytes += last
                    elif starts:
                        queued += len(starts)
                        queued_bytes += sum(lengths)
                        packets, sent = send(relay, peer, starts, lengths)
                        tx_packets += packets
                        tx_bytes += sent
                    relay, peer = sock, to
                starts.append(offset + 4)
                lengths.append(length)
            queued += len(starts)
            queued_bytes += sum(lengths)
            packets, sent = send(relay, peer, starts, lengths)
            tx_packets += packets
            tx_bytes += sent
        finally:
            stats = self.stats
            stats.rx_packets += len(sizes)
            stats.rx_bytes += sum(sizes)
            stats.cluster_tx_packets += tx_packets
            stats.cluster_tx_bytes += tx_bytes
            if no_channel or no_permission or malformed or queued != tx_packets:
                dropped, dropped_bytes = stats.dropped_packets, stats.dropped_bytes
                dropped[NO_CHANNEL] += no_channel
                dropped_bytes[NO_CHANNEL] += no_channel_bytes
                dropped[NO_PERMISSION] += no_permission
                dropped_bytes[NO_PERMISSION] += no_permission_bytes
                dropped[MALFORMED] += malformed
                dropped_bytes[MALFORMED] += malformed_bytes
                # What was queued for a peer and did not leave: the kernel refused it.
                dropped[SEND_ERROR] += queued - tx_packets
                dropped_bytes[SEND_ERROR] += queued_bytes - tx_bytes
        return len(sizes)


class StreamIngress:
    """The frames of one TCP/TLS connection: ``frames`` cuts what a read brought into STUN
    and ChannelData frames; ChannelData is relayed here, STUN goes to the server."""

    __slots__ = ("allocations", "batch", "client", "handle_stun", "stats")

    def __init__(
        self, server: TurnServer, client: StreamClient, batch: DatagramBatch | None = None
    ) -> None:
        self.allocations = server.allocations
        self.handle_stun = server.handle_stun
        self.stats = server.stats
        self.client = client
        self.batch = batch or shared_batch()

    def opened(self) -> None:
        """A connection was accepted (whether or not the listener then keeps it)."""
        self.stats.connections_total += 1

    def unframeable(self, size: int, oversize: bool = False) -> None:
        """Bytes that start no STUN or ChannelData frame (or one longer than
        max_message_size): one rx packet and one drop, then the listener closes the
        connection."""
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += size
        reason = OVERSIZE if oversize else MALFORMED
        stats.dropped_packets[reason] += 1
        stats.dropped_bytes[reason] += size

    def frames(self, data: bytes, max_frame: int) -> int:
        """Handle every whole frame at the start of ``data``; return how many bytes they took
        (the rest is an unfinished frame), or -1 once bytes start no frame, or one longer than
        ``max_frame`` (counted by ``unframeable``; the caller closes the connection)."""
        # Stream hot path. Per frame: its header read in place, one dict lookup, and the
        # payload's place queued; consecutive ChannelData frames to the same relay socket and
        # peer leave as one run, copied once into the batch memory and sent with one
        # sendmmsg. STUN is copied out and handled after the run before it has left, so a
        # Send indication cannot overtake ChannelData. Counters in locals, added once.
        size = len(data)
        allocations, client = self.allocations, self.client
        alloc = allocations.get(client)
        if size >= 4 and data[0] & 0xC0 == 0x40 and alloc is not None:
            # A read that is one relayed ChannelData frame (smooth traffic): sent at once.
            channel, length = _CHANNEL_HEADER(data)
            to = alloc.routes.get(channel)
            if to is not None and (length + 7) & ~3 == size <= max_frame:
                stats = self.stats
                stats.rx_packets += 1
                stats.rx_bytes += size
                try:
                    alloc.relay.sock.sendto(data[4 : 4 + length], to)  # type: ignore[union-attr]
                except OSError:
                    drop(stats, SEND_ERROR, length)  # the kernel refused it: its payload bytes
                    return size
                stats.cluster_tx_packets += 1
                stats.cluster_tx_bytes += length
                return size
        pos = 0
        relay: socket.socket | None = None
        peer: Address | None = None
        run_start = 0  # where the queued run begins in ``data``
        starts: list[int] = []
        lengths: list[int] = []
        rx = rx_bytes = queued = queued_bytes = relayed = relayed_bytes = 0
        no_channel = no_channel_bytes = no_permission = no_permission_bytes = 0
        try:
            while size - pos >= 4:
                kind = data[pos] & 0xC0
                channel, length = _CHANNEL_HEADER(data, pos)
                if kind == 0x40:
                    total = (length + 7) & ~3  # header, payload, padding to 4 (RFC 8656 12.5)
                elif kind == 0:
                    total = 20 + length  # a STUN message
                else:
                    total = 0
                if total == 0 or total > max_frame:
                    # Not STUN or ChannelData, or too large: the stream cannot be resynchronised.
                    self.unframeable(size - pos, oversize=total > max_frame)
                    return -1
                if size - pos < total:
                    break
                rx += 1
                rx_bytes += total
                if kind == 0:
                    packets, sent = self._send_run(data, run_start, relay, peer, starts, lengths)
                    relayed += packets
                    relayed_bytes += sent
                    self.handle_stun(data[pos : pos + total], client)
                    alloc = allocations.get(client)  # the request may have made or ended it
                    pos += total
                    continue
                to = alloc.routes.get(channel) if alloc is not None else None
                if to is None:
                    if alloc is not None and channel in alloc.channels:
                        no_permission += 1  # bound, but its peer's permission is gone
                        no_permission_bytes += total
                    else:
                        no_channel += 1
                        no_channel_bytes += total
                    pos += total
                    continue
                sock = alloc.relay.sock  # type: ignore[union-attr]
                if (
                    sock is not relay
                    or to is not peer
                    or len(starts) == BATCH
                    or pos + total - run_start > RUN_BYTES
                ):
                    packets, sent = self._send_run(data, run_start, relay, peer, starts, lengths)
                    relayed += packets
                    relayed_bytes += sent
                    relay, peer, run_start = sock, to, pos
                starts.append(pos + 4 - run_start)
                lengths.append(length)
                queued += 1
                queued_bytes += length
                pos += total
            packets, sent = self._send_run(data, run_start, relay, peer, starts, lengths)
            relayed += packets
            relayed_bytes += sent
        finally:
            stats = self.stats
            stats.rx_packets += rx
            stats.rx_bytes += rx_bytes
            stats.cluster_tx_packets += relayed
            stats.cluster_tx_bytes += relayed_bytes
            dropped, dropped_bytes = stats.dropped_packets, stats.dropped_bytes
            if no_channel:
                dropped[NO_CHANNEL] += no_channel
                dropped_bytes[NO_CHANNEL] += no_channel_bytes
            if no_permission:
                dropped[NO_PERMISSION] += no_permission
                dropped_bytes[NO_PERMISSION] += no_permission_bytes
            if queued != relayed:  # payloads the kernel refused (full buffer, unreachable)
                dropped[SEND_ERROR] += queued - relayed
                dropped_bytes[SEND_ERROR] += queued_bytes - relayed_bytes
        return pos

    def _send_run(
        self,
        data: bytes,
        run_start: int,
        relay: socket.socket | None,
        peer: Address | None,
        starts: list[int],
        lengths: list[int],
    ) -> tuple[int, int]:
        """Send the queued payloads (at ``run_start + starts[k]`` in ``data``) to ``peer``
        through ``relay``: one datagram each, sent from the batch memory they are copied into
        (a single payload straight from ``data``). Empties both lists; (packets, bytes) sent."""
        if not starts or relay is None or peer is None:
            return 0, 0
        if len(starts) == 1:
            start, length = run_start + starts.pop(), lengths.pop()
            try:
                relay.sendto(data[start : start + length], peer)
            except OSError:
                return 0, 0
            return 1, length
        batch = self.batch
        end = run_start + starts[-1] + lengths[-1]
        batch.view[: end - run_start] = memoryview(data)[run_start:end]
        return batch.send(relay, peer, starts, lengths)


def forward_send(
    alloc: Allocation | None,
    peer: Address,
    payload: bytes,
    size: int,
    stats: ListenerStats,
    own_listener: bool = False,
) -> None:
    """RFC 8656 11.2: relay a Send indication's DATA to a permitted peer, else drop it (the
    indication of ``size`` bytes counts as dropped, with its reason); never to one of
    stunnerd's own listeners (``own_listener``), whatever the permission."""
    relay = alloc.relay if alloc is not None else None
    if relay is None or alloc is None or not alloc.permits(peer[0]):
        reason = NO_PERMISSION  # no allocation holds a permission for it either
    elif own_listener:
        reason = Drop.OWN_LISTENER
    else:
        try:
            relay.sendto(payload, peer)
        except OSError:
            reason, size = SEND_ERROR, len(payload)  # the kernel refused it: not relayed
        else:
            stats.cluster_tx_packets += 1
            stats.cluster_tx_bytes += len(payload)
            return
    drop(stats, reason, size)


def count_egress_drops(
    stats: ListenerStats,
    unpermitted: int,
    unpermitted_bytes: int,
    oversize: int,
    oversize_bytes: int,
    refusal: Drop,
    refused: int,
    refused_bytes: int,
) -> None:
    """One wake-up's drops on the peer-to-client way, each with its one reason: a peer without
    a permission (RFC 8656 11.3), a datagram too large for one frame, and frames the client
    refused (``refusal``: send_error, or a full stream buffer). Called only when there are
    some, so the common wake-up pays nothing for it."""
    dropped, dropped_bytes = stats.dropped_packets, stats.dropped_bytes
    dropped[NO_PERMISSION] += unpermitted
    dropped_bytes[NO_PERMISSION] += unpermitted_bytes
    dropped[OVERSIZE] += oversize
    dropped_bytes[OVERSIZE] += oversize_bytes
    dropped[refusal] += refused
    dropped_bytes[refusal] += refused_bytes


def drop(stats: ListenerStats, reason: Drop, size: int) -> None:
    """Control path: one datagram or frame of ``size`` bytes dropped for ``reason``."""
    stats.dropped_packets[reason] += 1
    stats.dropped_bytes[reason] += size


# peer -> client


def answer(client: Client, data: bytes, stats: ListenerStats) -> bool:
    """Send one STUN answer to a client; counted as tx if the client's transport took it, else
    as a drop for the client's ``refusal`` reason (send_error, or a full stream buffer)."""
    if not client.answer(data):
        drop(stats, client.refusal, len(data))
        return False
    stats.tx_packets += 1
    stats.tx_bytes += len(data)
    return True


class ClientOutbox:
    """The peer-to-client datagrams of every relay socket of one UDP listener, gathered during
    one event-loop turn and sent through the listener socket with one sendmmsg.

    Why: with many allocations, each relay socket's wake-up brings a datagram or two, and a
    sendto per wake-up was a system call's fixed cost per datagram. Gathered, that cost is paid
    once per turn. The price is latency: a datagram waits for the rest of the turn (the other
    ready sockets' callbacks; ``flush`` is scheduled with ``call_soon``), or less when the
    BATCH slots fill up first. Anything else that leaves the listener socket (an answer, a
    Data indication) flushes first (``DatagramClient.send``), so the order to a client holds.

    Gathering only pays when several relay sockets wake up in one turn; with one (a single
    busy allocation) the scheduled flush is pure cost. So a turn whose flush carried one
    wake-up's datagrams makes the next PROBE wake-ups send at once (``direct``); the one after
    gathers again, to see whether others join it.

    ``tx`` is counted at the flush, from what sendmmsg accepted; a refused datagram is one
    send_error drop, as on the one-by-one path.
    """

    PROBE = 64  # direct wake-ups between two probes

    __slots__ = ("call_soon", "direct", "gather", "scheduled", "sock", "stats", "wakeups")

    def __init__(
        self, sock: socket.socket, stats: ListenerStats, call_soon: Callable[..., object]
    ) -> None:
        self.sock = sock
        self.stats = stats
        self.gather = Gather()
        self.call_soon = call_soon
        self.scheduled = False  # a flush at the end of this turn is on the loop's ready queue
        self.wakeups = 0  # relay socket wake-ups whose datagrams wait
        # Wake-ups that send at once before the next probe (0: gather): the last flush
        # carried one wake-up's datagrams.
        self.direct = 0

    @classmethod
    def for_listener(cls, sock: socket.socket, stats: ListenerStats) -> ClientOutbox | None:
        """An outbox for a listener socket served by the running loop (None: no loop, or no
        sendmmsg)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(sock, stats, loop.call_soon) if NATIVE else None

    def turn_ended(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        """Send what waits, counted: tx from what sendmmsg accepted, the rest send_error."""
        if not self.gather.used:
            return
        self.direct = self.PROBE if self.wakeups < 2 else 0
        self.wakeups = 0
        total, total_bytes, packets, sent = self.gather.send(self.sock)
        stats = self.stats
        stats.tx_packets += packets
        stats.tx_bytes += sent
        if packets != total:  # the kernel refused some (full buffer, socket closed)
            stats.dropped_packets[SEND_ERROR] += total - packets
            stats.dropped_bytes[SEND_ERROR] += total_bytes - sent


class RelayReceiver:
    """Forwards what reaches one relay socket from permitted peers to the allocation's UDP
    client (a TCP/TLS client's is ``StreamEgress``'s; ``relay_drain`` picks).

    The allocation's tables and the client's way out are bound once here, so the
    per-datagram loop in ``drain`` is local-variable work and C calls.
    """

    __slots__ = (
        "batch",
        "client",
        "name",
        "name_address",
        "outbox",
        "peer_routes",
        "permissions",
        "refusal",
        "send_run",
        "sock",
        "stats",
        "udp_addr",
        "udp_out",
    )

    def __init__(
        self,
        allocation: Allocation,
        sock: socket.socket,
        stats: ListenerStats,
        batch: DatagramBatch | None = None,
    ) -> None:
        client = allocation.client
        assert isinstance(client, DatagramClient)  # TCP/TLS: StreamEgress
        self.sock = sock
        self.batch = batch or shared_batch()
        self.permissions = allocation.permissions
        self.peer_routes = allocation.peer_routes
        self.stats = stats
        self.client = client
        # One sendmmsg through the listener socket.
        self.send_run = client.run_sender(self.batch)
        self.refusal = client.refusal  # the drop reason when it refuses a frame
        # The client's way out for a run of one frame: a sendto without the run sender.
        self.udp_out = client.sock
        # A client of a listener with an outbox: its frames may leave with the others',
        # addressed to the struct sockaddr_in in ``name``.
        self.outbox = client.outbox
        self.udp_addr = client.addr
        name = sockaddr(self.udp_addr) if self.outbox is not None else None
        self.name: object = name  # what ``name_address`` points into, held by the outbox too
        self.name_address = ctypes.addressof(name) if name is not None else 0

    def drain(self) -> None:
        outbox = self.outbox
        if outbox is not None:  # gather, unless the last turn had one wake-up (see ClientOutbox)
            if not outbox.direct:
                self._drain_gathered(outbox)
                return
            outbox.direct -= 1  # nothing waits in the outbox while it counts down
        # Hot path: one recvmmsg for the wake-up; per datagram one dict lookup and the
        # ChannelData header written in place in front of the payload in its slot; the run goes
        # to the client in one call. No logging, no tasks, no locks; drops counted in locals.
        # What was queued is counted per run, not per datagram.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return
        permissions = self.permissions
        peer_routes = self.peer_routes
        send_run = self.send_run
        memory = batch.memory
        starts: list[int] = []
        lengths: list[int] = []
        rx_packets = rx_bytes = tx_packets = tx_bytes = queued = queued_bytes = 0
        no_permission = no_permission_bytes = oversize = oversize_bytes = 0
        try:
            # zip without strict=: a keyword argument costs more than the loop body (the
            # lists are the same length, from one receive).
            for offset, size, addr in zip(OFFSETS, sizes, addresses):  # noqa: B905
                channel = peer_routes.get(addr)
                if channel is not None:
                    rx_packets += 1
                    rx_bytes += size
                    if size > MAX_DATAGRAM_RELAYED:  # cannot become one ChannelData datagram
                        oversize += 1
                        oversize_bytes += size
                        continue
                    _HEADER_INTO(memory, offset - 4, channel, size)
                    starts.append(offset - 4)
                    lengths.append(4 + size)
                    continue
                if addr[0] not in permissions:  # Allocation.permits, inlined
                    no_permission += 1  # RFC 8656 11.3: no permission, silently dropped
                    no_permission_bytes += size
                    continue
                rx_packets += 1
                rx_bytes += size
                # Data indication: after the frames before it, in order.
                queued += len(starts)
                queued_bytes += sum(lengths)
                packets, sent = send_run(starts, lengths)
                tx_packets += packets
                tx_bytes += sent
                frame = data_indication(addr, bytes(batch.view[offset : offset + size]))
                queued += 1
                queued_bytes += len(frame)
                if self.client.send(frame):
                    tx_packets += 1
                    tx_bytes += len(frame)
            if len(starts) == 1:  # one frame (smooth traffic): one sendto
                start, last = starts.pop(), lengths.pop()
                queued += 1
                queued_bytes += last
                try:
                    self.udp_out.sendto(memory[start : start + last], self.udp_addr)
                except OSError:
                    pass  # the kernel refused it: counted as the client's refusal below
                else:
                    tx_packets += 1
                    tx_bytes += last
            else:
                queued += len(starts)
                queued_bytes += sum(lengths)
                packets, sent = send_run(starts, lengths)
                tx_packets += packets
                tx_bytes += sent
        finally:
            stats = self.stats
            stats.cluster_rx_packets += rx_packets
            stats.cluster_rx_bytes += rx_bytes
            stats.tx_packets += tx_packets
            stats.tx_bytes += tx_bytes
            if no_permission or oversize or queued != tx_packets:
                count_egress_drops(
                    stats, no_permission, no_permission_bytes, oversize, oversize_bytes,
                    self.refusal, queued - tx_packets, queued_bytes - tx_bytes,
                )  # fmt: skip

    def _drain_gathered(self, outbox: ClientOutbox) -> None:
        # Hot path, a UDP client with an outbox: one recvmmsg straight into the outbox's free
        # slots; per datagram one dict lookup, the ChannelData header written in place in
        # front of the payload, and its length and destination entered. tx is counted when
        # the outbox sends (ClientOutbox.flush). No logging, no tasks, no locks, no copies.
        gather = outbox.gather
        first = gather.used
        sizes, addresses = gather.receive(self.sock, first)
        if not sizes:
            return
        peer_routes = self.peer_routes
        memory, names, lengths = gather.memory, gather.names, gather.lengths
        gather.keep.append(self.name)
        where = self.name_address
        entry = first
        relayed_bytes = 0
        for size, addr in zip(sizes, addresses):  # noqa: B905 (same length, one receive)
            channel = peer_routes.get(addr)
            if channel is None or size > MAX_DATAGRAM_RELAYED:
                break  # not a bound channel's datagram: the rest go one by one, below
            _HEADER_INTO(memory, SLOT * entry, channel, size)
            names[8 * entry] = where
            lengths[2 * entry + 1] = 4 + size
            relayed_bytes += size
            entry += 1
        gather.used = entry
        gather.bytes += relayed_bytes + 4 * (entry - first)
        outbox.wakeups += 1
        stats = self.stats
        stats.cluster_rx_packets += entry - first
        stats.cluster_rx_bytes += relayed_bytes
        done = entry - first
        if done < len(sizes):
            self._one_by_one(sizes[done:], addresses[done:], OFFSETS[entry:])
        if gather.used == BATCH:  # every slot taken: they leave now
            outbox.flush()
        elif gather.used and not outbox.scheduled:  # they leave at the end of the turn
            outbox.scheduled = True
            outbox.call_soon(outbox.turn_ended)

    def _one_by_one(
        self, sizes: list[int], addresses: list[Address], offsets: tuple[int, ...]
    ) -> None:
        """Not the hot path: a batch in the outbox's slots with datagrams that are not a bound
        channel's (a Data indication, no permission, oversize). What was entered before leaves
        first; then each of these, in order, as the one-by-one path would."""
        memory, client, stats = self.outbox.gather.memory, self.client, self.stats  # type: ignore[union-attr]
        for offset, size, addr in zip(offsets, sizes, addresses):  # noqa: B905
            channel = self.peer_routes.get(addr)
            if channel is None and addr[0] not in self.permissions:
                drop(stats, NO_PERMISSION, size)  # RFC 8656 11.3: no permission
                continue
            stats.cluster_rx_packets += 1
            stats.cluster_rx_bytes += size
            if channel is None:
                frame = data_indication(addr, memory[offset : offset + size])
            elif size > MAX_DATAGRAM_RELAYED:
                drop(stats, OVERSIZE, size)  # cannot become one ChannelData datagram
                continue
            else:
                _HEADER_INTO(memory, offset - 4, channel, size)
                frame = memory[offset - 4 : offset + size]
            if client.send(frame):  # flushes the outbox first
                stats.tx_packets += 1
                stats.tx_bytes += len(frame)
            else:
                drop(stats, SEND_ERROR, len(frame))


class StreamEgress:
    """Forwards what reaches one relay socket from permitted peers to a TCP/TLS client.

    The stream form of ``RelayReceiver``: each frame is made in its batch slot (the ChannelData
    header in front of the payload, the padding to 4 behind it, RFC 8656 12.5) and copied out
    once; a wake-up's frames reach the connection as one write (over TLS, a record each).
    tests/unit/test_stream_egress.py holds it to a plain reference of the same rules, byte for
    byte and count for count.
    """

    __slots__ = (
        "batch",
        "limit",
        "peer_routes",
        "permissions",
        "refusal",
        "sock",
        "stats",
        "write",
        "write_frames",
    )

    def __init__(
        self,
        allocation: Allocation,
        sock: socket.socket,
        stats: ListenerStats,
        batch: DatagramBatch | None = None,
    ) -> None:
        client = allocation.client
        assert isinstance(client, StreamClient)
        self.sock = sock
        self.batch = batch or shared_batch()
        self.permissions = allocation.permissions
        self.peer_routes = allocation.peer_routes
        self.stats = stats
        self.write = client.write_within  # (frames, bound) -> accepted whole, or refused whole
        self.write_frames = client.write_frames_within  # a run of frames: over TLS, a record each
        self.limit = client.limit
        self.refusal = client.refusal

    def drain(self) -> None:
        # Stream hot path: one recvmmsg for the wake-up. A wake-up of one ChannelData datagram
        # (smooth traffic) is one frame made in place and one write, without lists. Otherwise
        # per datagram one dict lookup and one copy of its frame; the frames before a Data
        # indication leave before it. Counters in locals, added once. No logging, no tasks,
        # no locks, no allocation beyond the frames.
        batch = self.batch
        sizes, addresses = batch.receive(self.sock)
        if not sizes:
            return
        memory, stats, write = batch.memory, self.stats, self.write
        if len(sizes) == 1:
            channel = self.peer_routes.get(addresses[0])
            size = sizes[0]
            if channel is not None and size <= MAX_UDP_PAYLOAD:
                # Slot 0: the payload at HEADROOM (4), so its frame starts at 0.
                framed = (size + 7) & ~3  # header, payload, padding to 4
                _HEADER_INTO(memory, 0, channel, size)
                memory[4 + size : framed] = STREAM_PADS[size & 3]
                stats.cluster_rx_packets += 1
                stats.cluster_rx_bytes += size
                if write(memory[:framed], self.limit):
                    stats.tx_packets += 1
                    stats.tx_bytes += framed
                else:
                    drop(stats, self.refusal, framed)  # the client's bound: not written
                return
        self._drain_frames(sizes, addresses)

    def _drain_frames(self, sizes: list[int], addresses: list[Address]) -> None:
        """The general case of ``drain``: several datagrams, or a Data indication."""
        batch = self.batch
        memory, view = batch.memory, batch.view
        peer_routes, permissions = self.peer_routes, self.permissions
        write, write_frames, limit = self.write, self.write_frames, self.limit
        frames: list[bytes] = []  # the run waiting to be written, in order
        run_bytes = 0
        received = received_bytes = written = written_bytes = offered = offered_bytes = 0
        unpermitted = unpermitted_bytes = too_large = too_large_bytes = 0
        try:
            for offset, size, addr in zip(OFFSETS, sizes, addresses):  # noqa: B905
                channel = peer_routes.get(addr)
                if channel is not None:
                    received += 1
                    received_bytes += size
                    if size > MAX_UDP_PAYLOAD:  # cannot be one ChannelData frame
                        too_large += 1
                        too_large_bytes += size
                        continue
                    start, framed = offset - 4, (size + 7) & ~3
                    _HEADER_INTO(memory, start, channel, size)
                    memory[offset + size : start + framed] = STREAM_PADS[size & 3]
                    frames.append(memory[start : start + framed])
                    run_bytes += framed
                    continue
                if addr[0] not in permissions:  # RFC 8656 11.3: no permission, dropped
                    unpermitted += 1
                    unpermitted_bytes += size
                    continue
                received += 1
                received_bytes += size
                # A Data indication: after the frames before it, in order.
                if frames:
                    offered += len(frames)
                    offered_bytes += run_bytes
                    if write_frames(b"".join(frames), limit):
                        written += len(frames)
                        written_bytes += run_bytes
                    frames.clear()
                    run_bytes = 0
                indication = data_indication(addr, bytes(view[offset : offset + size]))
                offered += 1
                offered_bytes += len(indication)
                if write(indication, limit):
                    written += 1
                    written_bytes += len(indication)
            if frames:
                offered += len(frames)
                offered_bytes += run_bytes
                if write_frames(b"".join(frames), limit):
                    written += len(frames)
                    written_bytes += run_bytes
        finally:
            stats = self.stats
            stats.cluster_rx_packets += received
            stats.cluster_rx_bytes += received_bytes
            stats.tx_packets += written
            stats.tx_bytes += written_bytes
            if unpermitted or too_large or offered != written:
                # Frames over the client's bound (or on a closing connection): not written.
                count_egress_drops(
                    stats, unpermitted, unpermitted_bytes, too_large, too_large_bytes,
                    self.refusal, offered - written, offered_bytes - written_bytes,
                )  # fmt: skip


def relay_drain(
    allocation: Allocation, sock: socket.socket, stats: ListenerStats
) -> Callable[[], None]:
    """What reads an allocation's relay socket: ``StreamEgress`` for a TCP/TLS client, else
    ``RelayReceiver``."""
    if isinstance(allocation.client, StreamClient):
        return StreamEgress(allocation, sock, stats).drain
    return RelayReceiver(allocation, sock, stats).drain


# allocation lifecycle


class AllocationCounter:
    """Counts the allocation totals, deletions by reason and lifetimes from the core's
    lifecycle events, then passes each event on to ``then`` (the daemon's drain, say)."""

    __slots__ = ("clock", "stats", "then")

    def __init__(
        self,
        stats: ListenerStats,
        then: AllocationObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.then = then
        self.clock = clock

    def created(self, alloc: Allocation) -> None:
        alloc.created_at = self.clock()
        self.stats.cluster_connections_total += 1
        if isinstance(alloc.client, DatagramClient):
            self.stats.connections_total += 1  # a UDP client's allocation is its connection
        if self.then is not None:
            self.then.created(alloc)

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None:
        stats = self.stats
        stats.deleted[_DELETE_SLOT[reason]] += 1
        lived = max(0.0, self.clock() - alloc.created_at)
        stats.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, lived)] += 1
        stats.duration_sum += lived
        if self.then is not None:
            self.then.deleted(alloc, reason)


_DELETE_SLOT = {reason: DELETE_REASONS.index(reason.value) for reason in DeleteReason}
