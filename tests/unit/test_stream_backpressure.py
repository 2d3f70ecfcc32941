"""A TCP/TLS client that stops reading costs a bounded write buffer, and ``tx`` counts only what
entered it.

Real sockets on 127.0.0.1, a real TCP or TLS listener, a raw client with a small receive
buffer (tests/streamturn.py). The client allocates, binds a channel to a UDP peer, and stops
reading; the peer floods. What the client could not take is dropped as ``write_buffer_full``,
never queued beyond ``stream_write_buffer`` and never counted as ``tx``. Then the client reads
everything it was sent: exactly the frames and bytes that ``tx`` counted.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import ssl
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stunner.cluster import Admission, Cluster
from stunner.config import ClusterConfig, LimitsConfig
from stunner.listener import Listener, StreamConnectionProtocol
from stunner.stats import Drop, ListenerStats
from stunner.stun import Class, Message, Method
from stunner.turn.clients import ANSWER_HEADROOM
from testkit.ports import free_port
from testkit.wait import wait_for
from tests.streamturn import StreamTurn
from tests.streamturn import listener as stream_listener
from tests.support import client_ssl_context, self_signed_cert

BOUND = 65536  # stream_write_buffer in these tests: small, so that the flood is short
N = 6000  # peer datagrams in the flood: more than the kernel buffers and the bound hold
SIZE = 1000  # payload bytes of each; a ChannelData frame is 1004 bytes, no padding


@dataclass
class Served:
    listener: Listener
    tls: ssl.SSLContext | None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.listener.config.port)

    @property
    def stats(self) -> ListenerStats:
        return self.listener.stats

    def connection(self) -> StreamConnectionProtocol:
        (only,) = self.listener.streams.open
        return only


@pytest.fixture(params=["TCP", "TLS"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    protocol = request.param
    cert, key = self_signed_cert(tmp_path) if protocol == "TLS" else (b"", b"")
    cluster = Cluster(ClusterConfig(name="peers", endpoints=("127.0.0.1",)))
    listener = stream_listener(
        protocol,
        free_port(),
        cert=cert,
        key=key,
        admission=Admission({"peers": cluster}, ("peers",)),
        limits=LimitsConfig(stream_write_buffer=BOUND),
    )
    await listener.start()
    try:
        yield Served(listener, client_ssl_context(cert) if cert else None)
    finally:
        await listener.stop()


def queued(sock: socket.socket | int, request: int) -> int:
    """FIONREAD (bytes waiting to be read) or TIOCOUTQ (bytes not yet acknowledged)."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    out = array.array("i", [0])
    fcntl.ioctl(fd, request, out, True)
    return out[0]


async def test_a_client_that_stops_reading_gets_what_tx_says_and_the_rest_is_dropped(
    served: Served,
) -> None:
    client = await asyncio.to_thread(StreamTurn.connect, served.address, served.tls, 4096)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        relay = await asyncio.to_thread(client.allocate)
        bound = await asyncio.to_thread(client.channel_bind, 0x4000, peer.getsockname())
        assert bound.msg_class == Class.SUCCESS
        stats = served.stats
        answers_tx = (stats.tx_packets, stats.tx_bytes)
        assert answers_tx == (3, client.bytes_read)  # 401, Allocate, ChannelBind: all read

        for i in range(N):  # the client reads none of this
            peer.sendto(bytes([i % 256]) * SIZE, relay)
            if i % 64 == 63:
                await asyncio.sleep(0)
        await wait_for(lambda: stats.cluster_rx_packets == N, what="the relay read the flood")

        # The books close: every peer datagram was relayed (tx) or dropped, nothing else.
        sent_packets = stats.tx_packets - answers_tx[0]
        sent_bytes = stats.tx_bytes - answers_tx[1]
        dropped = stats.dropped_packets[Drop.WRITE_BUFFER_FULL]
        assert sent_packets + dropped == N
        assert sent_bytes == sent_packets * (4 + SIZE)
        # Each dropped frame counts the bytes that did not leave: header + payload (+ padding).
        assert stats.dropped_bytes[Drop.WRITE_BUFFER_FULL] == dropped * (4 + SIZE + (-SIZE & 3))
        assert stats.cluster_rx_bytes == N * SIZE
        assert dropped > 0

        # stunnerd holds at most the bound for the client, whatever the peer sends.
        transport = served.connection().transport
        assert transport is not None
        assert transport.get_write_buffer_size() <= BOUND
        if served.tls is None:
            # TCP, exactly: what tx counted is in the client's receive queue, in flight in
            # the server's send queue, or in stunnerd's bounded buffer.
            server_fd = transport.get_extra_info("socket").fileno()

            def accounted() -> int:
                return (
                    queued(client.sock, termios.FIONREAD)
                    + queued(server_fd, termios.TIOCOUTQ)
                    + transport.get_write_buffer_size()
                )

            await wait_for(lambda: accounted() == sent_bytes, what="the queues settle")

        # The client reads again: it gets exactly what tx counted, frame for frame.
        before = (client.frames_read, client.bytes_read)
        frames = [await asyncio.to_thread(client.read_frame) for _ in range(sent_packets)]
        assert (client.frames_read - before[0], client.bytes_read - before[1]) == (
            sent_packets,
            sent_bytes,
        )
        assert all(frame[:4] == b"\x40\x00\x03\xe8" for frame in frames)
        await wait_for(lambda: transport.get_write_buffer_size() == 0)
        assert (stats.tx_packets - answers_tx[0], stats.tx_bytes - answers_tx[1]) == (
            sent_packets,
            sent_bytes,
        )

        # Relaying resumes once there is room: one more datagram arrives whole.
        peer.sendto(b"z" * SIZE, relay)
        assert await asyncio.to_thread(client.read_frame) == b"\x40\x00\x03\xe8" + b"z" * SIZE
    finally:
        peer.close()
        client.close()


async def test_a_client_that_never_reads_its_answers_is_closed(served: Served) -> None:
    """Binding requests without credentials, answers never read: the connection is aborted
    once its answers fill the bound plus ANSWER_HEADROOM; every request is answered or
    dropped, and stunnerd never held more than that for it."""
    client = await asyncio.to_thread(StreamTurn.connect, served.address, served.tls, 4096)
    request = Message(Method.BINDING, Class.REQUEST).encode()
    stats = served.stats
    sent = 0
    high_water = 0
    try:
        # The kernel's socket buffers take a few MB of answers first (the sender's grows to
        # tcp_wmem's maximum), so up to 8 MB of requests, 16 MB of answers; it ends sooner.
        burst = request * 1000
        while sent < 400_000:
            try:
                await asyncio.to_thread(client.sock.sendall, burst)
            except OSError:
                break  # reset: the server aborted the connection
            sent += 1000
            if not served.listener.streams.open:
                break
            transport = served.connection().transport
            assert transport is not None
            high_water = max(high_water, transport.get_write_buffer_size())
        await wait_for(lambda: len(served.listener.streams) == 0, what="the connection closed")
        assert high_water <= BOUND + ANSWER_HEADROOM
        dropped = stats.dropped_packets[Drop.WRITE_BUFFER_FULL]
        assert dropped >= 1
        assert stats.rx_packets == stats.tx_packets + dropped  # answered, or dropped
        assert stats.rx_packets <= sent
        assert stats.connections_total == 1
    finally:
        client.close()
