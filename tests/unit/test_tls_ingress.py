"""TLS ingress (``TlsServerProtocol.data_received``): decrypting into the shared plaintext buffer,
only while bytes are pending, hands the inner protocol exactly the plaintext the client wrote,
however the records are cut into reads, and still sees a close_notify.

The client is an in-memory ``ssl.SSLObject``; the server side is the real protocol.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path

import pytest

from stunner.batchio import DatagramBatch
from stunner.config.certs import server_context
from stunner.stats import ListenerStats
from stunner.stun import pack_channel_data
from stunner.tls import READ_CHUNK, TlsServerProtocol, TlsTransport
from stunner.turn import Allocation, StreamClient
from stunner.turn.datapath import StreamEgress, data_indication
from tests.support import self_signed_cert
from tests.unit.test_relay_batching import udp_socket


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class Wire:
    """The TCP transport under the TLS protocol: keeps what the server writes."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 5000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


class Session:
    """A completed handshake between an in-memory client and the server protocol."""

    def __init__(self, tmp_path: Path, first: list[bytes] | None = None) -> None:
        """``first``: records the client sends in the read of its Finished."""
        cert, key = self_signed_cert(tmp_path)
        self.inner = Inner()
        self.wire = Wire()
        self.server = TlsServerProtocol(server_context(cert, key), lambda: self.inner, 10.0)
        self.server.connection_made(self.wire)  # type: ignore[arg-type]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.to_client, self.from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = context.wrap_bio(self.to_client, self.from_client)
        while True:
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.server.data_received(self.from_client.read())
                self.to_client.write(b"".join(self.wire.out))
                self.wire.out.clear()
        for message in first or []:
            self.client.write(message)
        self.server.data_received(self.from_client.read())  # the client's Finished
        assert self.server.inner is self.inner

    def records(self, messages: list[bytes]) -> bytes:
        """The client's records for ``messages`` (one record each, as uclient writes them)."""
        for message in messages:
            self.client.write(message)
        return self.from_client.read()

    def plaintext(self) -> bytes:
        return b"".join(self.inner.chunks)


def messages(rng: random.Random, count: int, largest: int = 300) -> list[bytes]:
    return [rng.randbytes(rng.randrange(1, largest)) for _ in range(count)]


async def test_many_records_in_one_read(tmp_path: Path) -> None:
    session = Session(tmp_path)
    sent = messages(random.Random(1), 50)
    session.server.data_received(session.records(sent))
    assert session.plaintext() == b"".join(sent)
    assert len(session.inner.chunks) == 1  # one copy handed on for the read
    assert not session.wire.closed


async def test_records_split_at_every_byte_boundary(tmp_path: Path) -> None:
    session = Session(tmp_path)
    sent = messages(random.Random(2), 8)
    wire = session.records(sent)
    for i in range(len(wire)):
        session.server.data_received(wire[i : i + 1])
    assert session.plaintext() == b"".join(sent)
    for cut in range(1, 200, 3):  # two reads, cut anywhere in the first records
        more = messages(random.Random(cut), 3)
        wire = session.records(more)
        before = len(session.plaintext())
        session.server.data_received(wire[:cut])
        session.server.data_received(wire[cut:])
        assert session.plaintext()[before:] == b"".join(more)


async def test_more_plaintext_than_the_buffer_in_one_read(tmp_path: Path) -> None:
    session = Session(tmp_path)
    sent = messages(random.Random(3), 24, largest=16_000)
    assert sum(map(len, sent)) > 2 * READ_CHUNK
    session.server.data_received(session.records(sent))
    assert session.plaintext() == b"".join(sent)
    assert max(map(len, session.inner.chunks)) <= READ_CHUNK


async def test_plaintext_that_fills_the_buffer_exactly(tmp_path: Path) -> None:
    """A read whose plaintext ends exactly at the buffer's end: it is handed on, the read after
    it finds nothing (no pending record), and the next read is decrypted as usual."""
    session = Session(tmp_path)
    sent = [b"a" * 16384, b"b" * 16384, b"c" * 16384, b"d" * 16384]  # full records
    assert sum(map(len, sent)) == READ_CHUNK
    session.server.data_received(session.records(sent))
    assert [len(chunk) for chunk in session.inner.chunks] == [READ_CHUNK]
    more = messages(random.Random(7), 5)
    session.server.data_received(session.records(more))
    assert session.plaintext() == b"".join(sent + more)
    assert not session.wire.closed


async def test_records_in_the_read_that_ends_the_handshake(tmp_path: Path) -> None:
    """The client's Finished and its first records in one read: the records are decrypted
    there, not left for a read that may never come."""
    sent = messages(random.Random(8), 4)
    session = Session(tmp_path, first=sent)
    assert session.plaintext() == b"".join(sent)


@pytest.mark.parametrize("together", [True, False], ids=["same-read", "next-read"])
async def test_close_notify_after_data_closes(tmp_path: Path, together: bool) -> None:
    session = Session(tmp_path)
    sent = messages(random.Random(4), 3)
    wire = session.records(sent)
    with pytest.raises(ssl.SSLWantReadError):
        session.client.unwrap()  # writes the client's close_notify
    goodbye = session.from_client.read()
    if together:
        session.server.data_received(wire + goodbye)
    else:
        session.server.data_received(wire)
        assert not session.wire.closed
        session.server.data_received(goodbye)
    assert session.plaintext() == b"".join(sent)
    assert session.wire.closed


async def test_what_the_server_writes_is_what_the_client_reads(tmp_path: Path) -> None:
    session = Session(tmp_path)  # the wire still holds the session tickets: the client reads them
    transport = TlsTransport(session.server)
    sent = messages(random.Random(5), 20)
    for message in sent:  # views of a larger buffer, as the relay's runs are
        transport.write(memoryview(b"\x00" + message + b"\x00")[1:-1])
    session.to_client.write(b"".join(session.wire.out))
    received = b""
    while len(received) < sum(map(len, sent)):
        received += session.client.read(65536)
    assert received == b"".join(sent)
    assert transport.get_write_buffer_size() == 0  # all handed to the TCP transport


def frames(rng: random.Random, count: int) -> list[bytes]:
    """ChannelData frames padded to 4 (RFC 8656 12.5) and Data indications, mixed."""
    out = []
    for _ in range(count):
        size = rng.randrange(0, 1200)
        if rng.random() < 0.8:
            out.append(
                pack_channel_data(0x4000 + rng.randrange(0x4000), rng.randbytes(size), stream=True)
            )
        else:
            out.append(data_indication(("192.0.2.7", rng.randrange(1, 65536)), rng.randbytes(size)))
    return out


def client_records(session: Session) -> list[bytes]:
    """What the server wrote since the handshake, record by record (``SSL_read`` returns at
    most one record's plaintext)."""
    session.to_client.write(b"".join(session.wire.out))
    records = []
    while True:
        try:
            records.append(session.client.read(65536))
        except ssl.SSLWantReadError:
            return records


@pytest.mark.parametrize("view", [False, True], ids=["bytes", "memoryview"])
async def test_each_frame_of_a_run_is_a_record_of_its_own(tmp_path: Path, view: bool) -> None:
    """A run of frames leaves in one write, one record per frame: a client that reads one
    record as one message (uclient) sees each frame whole. The plaintext is what was written;
    a plain write stays one record."""
    session = Session(tmp_path)
    assert client_records(session) == []  # the session tickets
    session.wire.out.clear()
    transport = TlsTransport(session.server)
    sent = frames(random.Random(9), 40)
    for run in (sent[:1], sent[1:3], sent[3:]):
        data = b"".join(run)
        assert transport.write_frames_within(memoryview(data) if view else data, 1 << 20)
    assert transport.write_within(b"".join(sent[:2]), 1 << 20)
    assert len(session.wire.out) == 4  # one transport write per call
    assert client_records(session) == [*sent, b"".join(sent[:2])]


async def test_stream_egress_over_tls_sends_a_record_per_frame(tmp_path: Path) -> None:
    """A wake-up of several datagrams, through the real ``StreamEgress``: one write, and a
    record per frame, each the ChannelData frame of one datagram; counted as sent."""
    session = Session(tmp_path)
    client_records(session)  # the session tickets
    session.wire.out.clear()
    relay, peer = udp_socket(), udp_socket()
    try:
        allocation = Allocation(
            StreamClient(TlsTransport(session.server), ("192.0.2.1", 5000)), "u"
        )
        allocation.permit("127.0.0.1", 1e18)
        allocation.bind_channel(0x4001, peer.getsockname(), 1e18)
        stats = ListenerStats()
        drain = StreamEgress(allocation, relay, stats, DatagramBatch()).drain
        payloads = [b"x" * 100, b"y" * 33, b"z" * 1000]
        for payload in payloads:
            peer.sendto(payload, relay.getsockname())
        drain()
    finally:
        relay.close()
        peer.close()
    assert len(session.wire.out) == 1
    sent = [pack_channel_data(0x4001, payload, stream=True) for payload in payloads]
    assert client_records(session) == sent
    assert (stats.tx_packets, stats.tx_bytes) == (3, sum(map(len, sent)))


async def test_a_write_that_fails_midway_sends_none_of_its_records(tmp_path: Path) -> None:
    """Encryption fails on the second frame: the call is refused (the caller counts a drop)
    and the first frame's record does not leave either; the connection is reset."""
    session = Session(tmp_path)
    real = session.server.tls_io
    calls: list[int] = []

    class Failing:
        def write(self, data: bytes) -> int:
            calls.append(len(data))
            if len(calls) == 2:
                raise ssl.SSLError("bad record mac")
            return real.write(data)

    session.server.tls_io = Failing()  # type: ignore[assignment]
    session.wire.out.clear()  # the session tickets
    run = b"".join(frames(random.Random(10), 3))
    assert not TlsTransport(session.server).write_frames_within(run, 1 << 20)
    assert len(calls) == 2
    assert session.wire.closed
    assert session.wire.out == []  # reset: the first frame's record does not leave either


@pytest.mark.parametrize("through", ["c-object", "wrapper"])
async def test_the_c_object_and_the_wrapper_read_and_write_the_same(
    tmp_path: Path, through: str
) -> None:
    """The hot paths call the C object behind ``ssl.SSLObject`` (``tls_io``); the wrapper,
    the fallback where there is none, hands on the same plaintext both ways."""
    session = Session(tmp_path)
    if through == "wrapper":
        session.server.tls_io = session.server.sslobj  # type: ignore[assignment]
    else:
        assert type(session.server.tls_io).__module__ == "_ssl"
    sent = messages(random.Random(6), 30)
    wire = session.records(sent)
    session.server.data_received(wire[:700])
    session.server.data_received(wire[700:])
    assert session.plaintext() == b"".join(sent)
    assert session.server.send_within(b"".join(sent), 1 << 20)
    writes = len(session.wire.out)
    assert not session.server.send_within(b"x" * 100, 99)  # past the bound: nothing written
    assert len(session.wire.out) == writes
    session.to_client.write(b"".join(session.wire.out))
    received = b""
    while len(received) < sum(map(len, sent)):
        received += session.client.read(65536)
    assert received == b"".join(sent)
