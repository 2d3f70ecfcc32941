"""TURN clients that drive known traffic and count the truth on the client side.

aioice's client does, per allocation: Allocate (401), Allocate, ChannelBind on the first send to
a peer, ChannelData, and Refresh(lifetime=0) on close. Every frame it puts on or takes off the
wire is counted here (TCP/TLS frames padded to 4 bytes as sent), so listener packets and bytes
are known exactly; payloads sent and echoes received give the cluster counters.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aioice import stun, turn

from testkit.echo import Longer

Address = tuple[str, int]
Protocol = Literal["udp", "tcp", "tls"]
ECHO_TIMEOUT = 3.0
MAX_ROUNDS = 100_000  # bounds every echo loop even if its stop signal never comes
CLOSE_TIMEOUT = 10.0


@dataclass
class Counts:
    """Packets and bytes each way."""

    tx_packets: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0

    def add(self, other: Counts) -> None:
        self.tx_packets += other.tx_packets
        self.tx_bytes += other.tx_bytes
        self.rx_packets += other.rx_packets
        self.rx_bytes += other.rx_bytes


@dataclass
class Data(Counts):
    """Application payloads relayed through the allocation (what the cluster counters see)."""


@dataclass
class Wire(Counts):
    """Frames on the client's socket to the TURN server, both ways, and retransmissions."""

    retransmits: int = 0
    max_rx_stun: int = 0
    # Answers the server sent that cannot have reached us: the last request's sends that
    # were not answered before the socket closed (see `unanswered`).
    late_answers: int = 0
    _tids: set[bytes] = field(default_factory=set, repr=False)
    _sends: dict[bytes, int] = field(default_factory=dict, repr=False)
    _answers: dict[bytes, int] = field(default_factory=dict, repr=False)
    _last_request: bytes = field(default=b"", repr=False)
    protocol: Any = field(default=None, repr=False)

    def on_send(self, frame: bytes) -> None:
        self.tx_packets += 1
        self.tx_bytes += len(frame)
        if len(frame) >= 20 and not turn.is_channel_data(frame):
            tid = frame[8:20]
            if tid in self._tids:
                self.retransmits += 1
            self._tids.add(tid)
            if frame[0] & 0x01 == 0 and frame[1] & 0x10 == 0:  # class bits 00: a request
                self._sends[tid] = self._sends.get(tid, 0) + 1
                self._last_request = tid

    def on_receive(self, frame: bytes) -> None:
        self.rx_packets += 1
        self.rx_bytes += len(frame)
        if not turn.is_channel_data(frame):
            self.max_rx_stun = max(self.max_rx_stun, len(frame))
            if len(frame) >= 20:
                tid = frame[8:20]
                self._answers[tid] = self._answers.get(tid, 0) + 1

    def unanswered(self) -> int:
        """Sends of the last request that got no answer before the socket closed.

        Why the listener's tx is exact: requests are sequential, and the server answers in
        order on one path, so every answer to an earlier request arrived before the answer
        to a later one. Only the last request's extra answers (to its retransmissions) can
        arrive after we stopped listening; every other answer the client did not get was
        never sent (the amplification guard withheld it).
        """
        tid = self._last_request
        return max(0, self._sends.get(tid, 0) - self._answers.get(tid, 0)) if tid else 0

    def add(self, other: Counts) -> None:
        super().add(other)
        if isinstance(other, Wire):
            self.retransmits += other.retransmits
            self.max_rx_stun = max(self.max_rx_stun, other.max_rx_stun)
            self.late_answers += other.late_answers + other.unanswered()


_wire: contextvars.ContextVar[Wire | None] = contextvars.ContextVar("turn_wire", default=None)


class _Counting:
    """Counts every frame an aioice TURN client protocol sends or receives."""

    wire: Wire

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire = _wire.get() or Wire()
        self.wire.protocol = self

    def _on_wire(self, data: bytes) -> bytes:
        return data

    def _send(self, data: bytes) -> None:
        self.wire.on_send(self._on_wire(data))
        super()._send(data)  # type: ignore[misc]

    def datagram_received(self, data: bytes | str, addr: tuple[str, int]) -> None:
        self.wire.on_receive(data if isinstance(data, bytes) else data.encode())
        super().datagram_received(data, addr)  # type: ignore[misc]


class _CountingUdp(_Counting, turn.TurnClientUdpProtocol):
    pass


class _CountingTcp(_Counting, turn.TurnClientTcpProtocol):
    def _on_wire(self, data: bytes) -> bytes:
        return self._padded(data)  # what TCP/TLS actually carries


# create_turn_endpoint looks these names up when called: counting subclasses stand in for
# them in this (test) process only. Each client task sets its own Wire in a context variable.
turn.TurnClientUdpProtocol = _CountingUdp  # type: ignore[misc]
turn.TurnClientTcpProtocol = _CountingTcp  # type: ignore[misc]


@dataclass(frozen=True)
class Endpoint:
    """A TURN listener as a client reaches it; `name` is the listener's metric label."""

    name: str
    protocol: Protocol
    host: str
    port: int
    ssl: ssl.SSLContext | None = None


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Address] | Exception] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.inbox.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.inbox.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


class EchoError(AssertionError):
    """The echo did not come back (or something else came back)."""


class Allocation:
    """One aioice TURN allocation with exact client-side counts."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.wire = Wire()
        self.data = Data()
        self.transport: turn.TurnTransport | None = None
        self._receiver: _Receiver | None = None
        self.relayed: Address | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint, username: str, password: str) -> Allocation:
        alloc = cls(endpoint)
        token = _wire.set(alloc.wire)
        try:
            alloc.transport, alloc._receiver = await turn.create_turn_endpoint(
                _Receiver,
                (endpoint.host, endpoint.port),
                username=username,
                password=password,
                transport="udp" if endpoint.protocol == "udp" else "tcp",
                ssl=endpoint.ssl,
            )
        finally:
            _wire.reset(token)
        alloc.relayed = alloc.transport.get_extra_info("sockname")
        return alloc

    @property
    def inner(self) -> Any:
        """aioice's protocol object (to send raw STUN, e.g. a Send indication)."""
        return self.wire.protocol

    async def echo(self, peer: Address, payload: bytes, timeout: float = ECHO_TIMEOUT) -> None:
        """Send one datagram to `peer` through the relay and wait for the same bytes back."""
        await self.exchange(peer, payload, [payload], timeout)

    async def exchange(
        self, peer: Address, data: bytes, replies: Sequence[bytes], timeout: float = ECHO_TIMEOUT
    ) -> None:
        """Send `data` to `peer` and wait for exactly `replies`, in order (asymmetric peer)."""
        assert self.transport is not None
        self.transport.sendto(data, peer)
        await self.expect(peer, replies, timeout)
        self.data.tx_packets += 1
        self.data.tx_bytes += len(data)

    async def expect(
        self, peer: Address, replies: Sequence[bytes], timeout: float = ECHO_TIMEOUT
    ) -> None:
        """Wait for `replies` from `peer`, in order, and count them as relayed to us."""
        assert self._receiver is not None
        for want in replies:
            try:
                got = await asyncio.wait_for(self._receiver.inbox.get(), timeout)
            except TimeoutError:
                raise EchoError(f"{self.endpoint.name}: no answer from {peer}") from None
            if isinstance(got, Exception):
                raise got
            data, addr = got
            if data != want or tuple(addr) != tuple(peer):
                raise EchoError(f"{self.endpoint.name}: wrong answer {data[:16]!r} from {addr}")
            self.data.rx_packets += 1
            self.data.rx_bytes += len(data)

    def channel(self, peer: Address) -> int:
        """The channel aioice bound to `peer` (after a first send to it)."""
        return int(self.inner.peer_to_channel[peer])

    async def write_frames(self, frames: Sequence[bytes], *, split: int = 1) -> None:
        """Put raw frames on the wire, counted: all in one write (`split` = 1, a pipelined
        burst), or each cut into `split` writes, a short pause between the pieces so that the
        server reads them separately. UDP: one datagram per frame, back to back."""
        inner = self.inner
        for frame in frames:
            self.wire.on_send(frame)
        if self.endpoint.protocol == "udp":
            for frame in frames:
                inner.transport.sendto(frame)
            return
        if split <= 1:
            inner.transport.write(b"".join(frames))
            return
        for frame in frames:
            step = -(-len(frame) // split)
            for at in range(0, len(frame), step):
                inner.transport.write(frame[at : at + step])
                await asyncio.sleep(0.005)

    async def vanish(self) -> None:
        """Leave without Refresh(0): stop refreshing; TCP/TLS: reset the connection; UDP: close
        the socket and say nothing, so that only expiry ends the allocation."""
        inner = self.inner
        if inner.refresh_task is not None:
            inner.refresh_task.cancel()
            inner.refresh_task = None
        transport = inner.transport
        sock = transport.get_extra_info("socket")
        if self.endpoint.protocol != "udp" and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        if self._receiver is not None:
            await asyncio.wait_for(self._receiver.closed, CLOSE_TIMEOUT)
        self.transport = None

    async def echo_many(self, peer: Address, count: int, size: int, tag: int = 0) -> None:
        """`count` ping-pongs of `size` bytes; each payload is unique, so a stray echo shows."""
        for seq in range(count):
            await self.echo(peer, payload(tag, seq, size))

    async def first_error(self, timeout: float = ECHO_TIMEOUT) -> Exception:
        """The next error aioice reports (e.g. a 403 on ChannelBind)."""
        assert self._receiver is not None
        while True:
            got = await asyncio.wait_for(self._receiver.inbox.get(), timeout)
            if isinstance(got, Exception):
                return got

    async def request(self, method: stun.Method, **attributes: Any) -> stun.Message:
        """An authenticated STUN request on this allocation (raises TransactionFailed)."""
        msg = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
        msg.attributes.update(attributes)
        response, _ = await self.inner.request_with_retry(msg)
        return response  # type: ignore[no-any-return]

    def indicate(self, method: stun.Method, **attributes: Any) -> None:
        """A STUN indication (no answer), e.g. SEND with XOR-PEER-ADDRESS and DATA."""
        msg = stun.Message(message_method=method, message_class=stun.Class.INDICATION)
        msg.attributes.update(attributes)
        self.inner.send_stun(msg, self.inner.server)

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Refresh(lifetime=0), then wait until aioice has closed the socket."""
        if self.transport is None or self._receiver is None:
            return
        self.transport.close()
        await asyncio.wait_for(self._receiver.closed, timeout)


# The asymmetric peer's answers (testkit.echo.Longer): 13 bytes longer (odd, so ChannelData
# frames back also need different padding), and twice for every third sequence number of
# `payload`. A pure function of the datagram: each client knows what it must get back.
ASYMMETRIC_EXTRA = 13
TWICE_EVERY = 3
ASYMMETRIC = Longer(ASYMMETRIC_EXTRA, TWICE_EVERY)


def payload(tag: int, seq: int, size: int) -> bytes:
    head = struct.pack("!II", tag, seq)
    return (head + bytes(range(256)) * (size // 256 + 1))[:size]


def channel_data(channel: int, data: bytes, stream: bool) -> bytes:
    """A ChannelData frame (RFC 8656 12.4), padded to 4 bytes over TCP/TLS."""
    frame = struct.pack("!HH", channel, len(data)) + data
    return frame + bytes(-len(frame) % 4) if stream else frame


@dataclass
class Tally:
    """The truth for one listener: what its clients did, summed."""

    name: str
    protocol: Protocol
    allocations: int = 0
    connections: int = 0
    wire: Wire = field(default_factory=Wire)
    data: Data = field(default_factory=Data)

    def add(self, alloc: Allocation) -> None:
        # One UDP client socket per allocation; one TCP/TLS connection per allocation.
        self.allocations += 1
        self.connections += 1
        self.wire.add(alloc.wire)
        self.data.add(alloc.data)


def tally(name: str, protocol: Protocol, allocations: Sequence[Allocation]) -> Tally:
    t = Tally(name, protocol)
    for alloc in allocations:
        t.add(alloc)
    return t


async def open_many(
    endpoint: Endpoint, username: str, password: str, count: int
) -> list[Allocation]:
    """`count` concurrent allocations; if any fails, the others are closed."""
    results = await asyncio.gather(
        *(Allocation.open(endpoint, username, password) for _ in range(count)),
        return_exceptions=True,
    )
    allocs = [r for r in results if isinstance(r, Allocation)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_all(allocs)
        raise errors[0]
    return allocs


async def close_all(allocs: Sequence[Allocation]) -> None:
    await asyncio.gather(*(a.close() for a in allocs), return_exceptions=True)


async def keep_echoing(
    alloc: Allocation, peer: Address, stop: asyncio.Event, size: int = 120, tag: int = 7
) -> None:
    """Echo until `stop` is set (bounded: at most MAX_ROUNDS echoes)."""
    for seq in range(MAX_ROUNDS):
        if stop.is_set():
            return
        await alloc.echo(peer, payload(tag, seq, size))
