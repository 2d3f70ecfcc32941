"""Fuzz targets: what a hostile client can reach, each with the invariants it must keep.

Three entry points, as the relay's listeners call them:
- ``datagram``: one UDP datagram, sent over loopback to a listener socket and read by
  ``DatagramIngress.drain`` (STUN parse, the unauthenticated control path, and
  ChannelData on a standing allocation with a channel);
- ``stream``: one TCP/TLS connection's bytes, cut into chunks, into ``data_received``;
- ``signed``: authenticated requests with hostile attributes, signed by the harness, so the
  fuzzer reaches the method handlers that random bytes never get past MESSAGE-INTEGRITY for.

A crash is any exception out of the target, any ERROR log record (``handle_stun`` turns handler
exceptions into a logged 500), an error reported to the event loop, or a broken invariant.
"""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from stunner.auth import PlaintextAuth, long_term_key
from stunner.config import LimitsConfig
from stunner.listener import StreamConnectionProtocol
from stunner.stats import ListenerStats
from stunner.stun import Class, Message, Method, pack_channel_data, parse_message
from stunner.stun.message import message_type
from stunner.telemetry import listener_sample
from stunner.turn import Allocation, Client, DatagramClient, TurnServer
from stunner.turn.datapath import DatagramIngress
from tests.support import ErrorLog, sign_raw, tlv

REALM = "stunner.l7mp.io"
USER, PASSWORD = "user1", "pass1"
CLIENT = ("192.0.2.10", 40000)
PEER = ("127.0.0.254", 9)  # admitted; loopback where nothing listens
CHANNEL = 0x4000
RELAY_PORTS = (47000, 47999)


class FuzzFailure(AssertionError):
    """An invariant broke, or the relay logged an error, for this input."""


class ErrorRecords(ErrorLog):
    def check(self) -> None:
        """Raise for the first ERROR record since the last check (with its exception)."""
        if self.records:
            first = self.records[0]
            self.records.clear()
            cause = ""
            if first.exc_info and first.exc_info[1] is not None:
                cause = f" ({type(first.exc_info[1]).__name__}: {first.exc_info[1]})"
            raise FuzzFailure(f"logged at {first.levelname}: {first.getMessage()}{cause}")


class Sink:
    """A datagram transport that keeps counts; client-bound data must be valid STUN/TURN."""

    def __init__(self, client_bound: bool) -> None:
        self.client_bound = client_bound
        self.packets = 0
        self.real: Any = None  # a real relay transport to close, when wrapping one

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.packets += 1
        if self.client_bound and data[0] & 0xC0 == 0:
            parse_message(data)  # our own answers must parse

    def write(self, data: bytes) -> None:
        self.sendto(data)

    def close(self) -> None:
        if self.real is not None:
            self.real.close()

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # a client that reads at once: the stream bound never bites here

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.20", 5000) if name == "peername" else default


def make_server(name: str) -> TurnServer:
    return TurnServer(
        name,
        ListenerStats(),
        PlaintextAuth(REALM, USER, PASSWORD),
        lambda ip: ip == PEER[0],
        "127.0.0.1",
        *RELAY_PORTS,
        limits=LimitsConfig(udp_amplification_guard=False),
    )


def standing_allocation(server: TurnServer, client: Client) -> None:
    """An allocation with a permission and a channel to PEER, relaying into a Sink."""
    alloc = Allocation(client, USER)
    alloc.relay = Sink(client_bound=False)  # type: ignore[assignment]
    alloc.expires_at = math.inf
    alloc.permit(PEER[0], math.inf)
    alloc.bind_channel(CHANNEL, PEER, math.inf)
    server.allocations[client.key] = alloc
    server.quotas.add(USER)


class DatagramTarget:
    """One UDP datagram from a client socket that holds an allocation with channel 0x4000.

    Real loopback sockets: the listener reads with the production ``drain``, and its answers
    land on the client socket, where they are counted and parsed.
    """

    needs_loop = False
    MAX = 65507  # the largest UDP payload over IPv4

    def __init__(self) -> None:
        self.server = make_server("fuzz-udp")
        self.listener = self._socket()
        self.client = self._socket()
        self.receiver = DatagramIngress(self.server, self.listener)
        self.address = self.listener.getsockname()
        key = self.client.getsockname()
        standing_allocation(self.server, DatagramClient(self.listener, key))
        # ChannelData leaves through a real relay socket (sendmmsg needs one), to PEER on
        # loopback, where nothing listens.
        relay = self._socket()
        self.server.allocations[key].relay = SimpleNamespace(  # type: ignore[assignment]
            sock=relay, sendto=relay.sendto, close=relay.close
        )
        self.answers = 0

    @staticmethod
    def _socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def __call__(self, data: bytes) -> None:
        data = data[: self.MAX]
        stats = self.server.stats
        rx, rx_bytes = stats.rx_packets, stats.rx_bytes
        self.client.sendto(data, self.address)
        self.receiver.drain()
        if (stats.rx_packets, stats.rx_bytes) != (rx + 1, rx_bytes + len(data)):
            raise FuzzFailure("a datagram was not counted exactly once")
        while True:
            try:
                answer = self.client.recv(70000)
            except BlockingIOError:
                break
            self.answers += 1
            parse_message(answer)  # our own answers must parse
        if stats.tx_packets != self.answers:
            raise FuzzFailure("tx_packets disagrees with what was sent")

    def seeds(self) -> list[bytes]:
        allocate = Message(Method.ALLOCATE, Class.REQUEST)
        allocate.attributes["REQUESTED-TRANSPORT"] = 17
        return [
            Message(Method.BINDING, Class.REQUEST).encode(fingerprint=True),
            allocate.encode(),
            pack_channel_data(CHANNEL, b"payload"),
            pack_channel_data(CHANNEL + 1, b"x" * 40),
        ]


class StreamTarget:
    """A TCP/TLS connection: byte 0 picks the chunk size, the rest is the stream."""

    needs_loop = True

    def __init__(self) -> None:
        self.server = make_server("fuzz-tcp")
        self.bytes_seen = 0

    async def run(self, data: bytes) -> None:
        server = self.server
        transport = StreamSink()
        proto = StreamConnectionProtocol(server)
        proto.connection_made(transport)  # type: ignore[arg-type]
        assert proto.client is not None
        standing_allocation(server, proto.client)
        chunk = 1 + (data[0] % 97 if data else 0)
        body = data[1:]
        for start in range(0, len(body), chunk):
            if transport.closed:
                break
            proto.data_received(body[start : start + chunk])
        proto.connection_lost(None)
        stats = server.stats
        if proto.connections.open or proto.connections.per_source or server.allocations:
            raise FuzzFailure("connection state left behind after close")
        if stats.rx_bytes > self.bytes_seen + len(body):
            raise FuzzFailure("more bytes counted than received")
        self.bytes_seen = stats.rx_bytes

    def seeds(self) -> list[bytes]:
        allocate = Message(Method.ALLOCATE, Class.REQUEST)
        allocate.attributes["REQUESTED-TRANSPORT"] = 17
        return [
            b"\x03" + allocate.encode() + pack_channel_data(CHANNEL, b"abc", stream=True),
            b"\x00" + pack_channel_data(CHANNEL, b"x" * 9, stream=True) * 3,
            b"\x10" + Message(Method.BINDING, Class.REQUEST).encode()[:11],
        ]


class StreamSink(Sink):
    def __init__(self) -> None:
        super().__init__(client_bound=True)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class SignedTarget:
    """Authenticated requests: byte 0 picks the method and class, byte 1 the credentials'
    shape, the rest is raw attributes; the harness adds USERNAME, REALM, NONCE and a valid
    MESSAGE-INTEGRITY. One client 5-tuple, so at most one allocation at a time."""

    needs_loop = True
    METHODS = (
        Method.ALLOCATE,
        Method.REFRESH,
        Method.CREATE_PERMISSION,
        Method.CHANNEL_BIND,
        Method.SEND,
        Method.BINDING,
        0x00B,  # unknown
    )

    def __init__(self) -> None:
        self.server = make_server("fuzz-signed")
        self.client = Sink(client_bound=True)
        self.endpoint = DatagramClient(self.client, CLIENT)  # type: ignore[arg-type]
        self.key = long_term_key(USER, REALM, PASSWORD)

    def encode(self, data: bytes) -> bytes:
        if len(data) < 2:
            data += b"\x00" * (2 - len(data))
        method = self.METHODS[data[0] % len(self.METHODS)]
        klass = Class.INDICATION if method == Method.SEND else Class.REQUEST
        shape = data[1]
        nonce = self.server.auth.make_nonce()
        if shape & 0x01:
            nonce = nonce[:8] + data[2:10]  # a stamp with a hostile MAC
        username = USER if not shape & 0x02 else data[2:12].decode("utf-8", "replace")
        body = (
            tlv(0x0006, username.encode())
            + tlv(0x0014, REALM.encode())
            + tlv(0x0015, nonce)
            + data[2:]
        )
        mtype = message_type(method, klass)
        return sign_raw(mtype, b"fuzz-fuzz-tx", body, self.key, bool(shape & 0x04))

    async def run(self, data: bytes) -> None:
        server = self.server
        before = self.client.packets
        server.handle_stun(self.encode(data), self.endpoint)
        for alloc in server.allocations.values():
            if not isinstance(alloc.relay, Sink):
                sink = Sink(client_bound=False)  # never send real datagrams from the fuzzer
                sink.real = alloc.relay
                alloc.relay = sink  # type: ignore[assignment]
        if self.client.packets - before > 1:
            raise FuzzFailure("more than one answer to one request")
        stats = listener_sample(server.stats, server.allocations.values(), 0)
        if not stats.allocations == len(server.allocations) == stats.connections <= 1:
            raise FuzzFailure("allocation gauges disagree with the allocation table")

    def seeds(self) -> list[bytes]:
        peer = struct.pack("!BBH", 0, 1, 9 ^ 0x2112) + bytes(
            a ^ b for a, b in zip(bytes([127, 0, 0, 254]), b"\x21\x12\xa4\x42", strict=True)
        )
        return [
            b"\x00\x00" + tlv(0x0019, b"\x11\x00\x00\x00"),
            b"\x03\x00" + tlv(0x0012, peer) + tlv(0x000C, b"\x40\x00\x00\x00"),
            b"\x02\x00" + tlv(0x0012, peer),
            b"\x01\x04" + tlv(0x000D, b"\x00\x00\x00\x00"),
            b"\x04\x00" + tlv(0x0012, peer) + tlv(0x0013, b"data"),
        ]


TARGETS: dict[str, Callable[[], Any]] = {
    "datagram": DatagramTarget,
    "stream": StreamTarget,
    "signed": SignedTarget,
}
