"""Per-source connection caps on TLS as on TCP, and relay sockets sized like listener sockets."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from stunner.config import LimitsConfig
from stunner.turn.relay import RelayPortAllocator
from stunner.udp import SOCKET_BUFFER
from testkit.ports import free_port
from testkit.wait import settle
from tests.streamturn import StreamTurn
from tests.streamturn import listener as stream_listener
from tests.support import client_ssl_context, self_signed_cert

CAP = 3


def ends(sock: socket.socket) -> bool:
    """Blocks until the server ends the connection (FIN or reset); False on the timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("protocol", ["TCP", "TLS"])
async def test_a_source_is_capped_pending_tls_handshakes_included(
    protocol: str, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path) if protocol == "TLS" else (b"", b"")
    listener = stream_listener(
        protocol,
        free_port(),
        cert=cert,
        key=key,
        limits=LimitsConfig(tcp_connections_per_source=CAP),
    )
    await listener.start()
    address = ("127.0.0.1", listener.config.port)
    held: list[socket.socket] = []
    try:
        # CAP connections that never speak (TLS: the handshake never starts), then two more.
        for _ in range(CAP + 2):
            sock = socket.create_connection(address, timeout=5.0)
            held.append(sock)
        await settle(lambda: listener.streams.per_source, {"127.0.0.1": CAP})
        extra = held[CAP:]
        assert await asyncio.gather(*(asyncio.to_thread(ends, s) for s in extra)) == [True, True]
        for sock in extra:
            sock.close()
        assert listener.streams.per_source == {"127.0.0.1": CAP}
        # A real client is refused while the silent ones hold the source's share...
        tls = client_ssl_context(cert) if cert else None
        with pytest.raises((OSError, EOFError)):
            client = await asyncio.to_thread(StreamTurn.connect, address, tls)
            try:
                await asyncio.to_thread(client.allocate)
            finally:
                client.close()
        # ...and served once one of them leaves.
        held.pop(0).close()
        await settle(lambda: listener.streams.per_source, {"127.0.0.1": CAP - 1})
        client = await asyncio.to_thread(StreamTurn.connect, address, tls)
        try:
            await asyncio.to_thread(client.allocate)
            assert len(listener.server.allocations) == 1
            assert listener.streams.per_source == {"127.0.0.1": CAP}
        finally:
            client.close()
    finally:
        for sock in held:
            sock.close()
        await listener.stop()
    await settle(lambda: listener.streams.per_source, {})


def doubled_and_capped(requested: int, maximum_file: str) -> int:
    """What SO_RCVBUF/SO_SNDBUF read back: the kernel caps the request at
    net.core.[rw]mem_max and doubles it for its bookkeeping."""
    with open(maximum_file) as fh:
        return 2 * min(requested, int(fh.read()))


async def test_relay_sockets_get_the_listener_socket_buffers() -> None:
    port = free_port()
    relay = RelayPortAllocator("127.0.0.1", port, port).bind()
    assert relay is not None
    listener = stream_listener("UDP", free_port())
    await listener.start()
    try:
        assert listener._udp is not None
        for sock in (relay, listener._udp.sock):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == doubled_and_capped(
                SOCKET_BUFFER, "/proc/sys/net/core/rmem_max"
            )
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == doubled_and_capped(
                SOCKET_BUFFER, "/proc/sys/net/core/wmem_max"
            )
    finally:
        relay.close()
        await listener.stop()
