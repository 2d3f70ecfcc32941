"""``python -m bench.stream_instructions``: user-space instructions per relayed frame on the stream
paths, counted by callgrind, so a change to them is judged without timing noise.

Each path runs in process on loopback sockets, with the real classes: TCP ingress
(``StreamConnectionProtocol`` and ``StreamIngress``), TLS ingress (``TlsServerProtocol`` in
front of them, an in-memory client making the records), and the way back (``StreamEgress``
into a ``StreamClient`` over a TCP or a TLS transport that keeps nothing). A path runs twice
under ``valgrind --tool=callgrind``, with N and 3N frames, and the difference over 2N frames is
its cost per frame: start-up cancels out. The kernel's work is not counted, nor is the
client's or the peer's (runs of their side alone are subtracted: the client's records, the
peer's sends). ``--stunner OLD_TREE/stunner`` measures another tree's
stunner package with these harnesses (before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stunner.auth import PlaintextAuth
from stunner.listener import StreamConnectionProtocol, StreamConnections
from stunner.stats import ListenerStats
from stunner.stun import pack_channel_data
from stunner.tls import TlsServerProtocol, TlsTransport
from stunner.turn import StreamClient, TurnServer, datapath

from . import certs

CHANNEL = 0x4000
PATHS = ("tcp-in", "tls-in", "tcp-out", "tls-out")
_COLLECTED = re.compile(r"Collected : (\d+)")


class NullTransport:
    """A connection whose client takes everything at once."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 5000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def turn_server() -> TurnServer:
    return TurnServer(
        "bench", ListenerStats(), PlaintextAuth("r", "u", "p"), lambda ip: True,
        "127.0.0.1", 40000, 40001,
    )  # fmt: skip


def tls_pair(workdir: Path, inner: Callable[[], Any]) -> tuple[TlsServerProtocol, Any, Any]:
    """A server protocol after a completed handshake, its in-memory client and the client's
    outgoing BIO."""
    cert, key = certs.self_signed(workdir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = TlsServerProtocol(context, inner, 10.0)
    wire: list[bytes] = []
    tcp = NullTransport()
    tcp.write = wire.append  # type: ignore[method-assign]
    server.connection_made(tcp)  # type: ignore[arg-type]
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, from_client)
    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            server.data_received(from_client.read())
            to_client.write(b"".join(wire))
            wire.clear()
    server.data_received(from_client.read())
    tcp.write = NullTransport.write.__get__(tcp)  # type: ignore[method-assign]
    return server, client, from_client


async def ingress(path: str, per_read: int, size: int, frames: int, client_only: bool) -> None:
    server = turn_server()
    made: list[StreamConnectionProtocol] = []

    def inner() -> StreamConnectionProtocol:
        made.append(StreamConnectionProtocol(server, StreamConnections(), admitted=True))
        return made[-1]

    frame = pack_channel_data(CHANNEL, b"x" * size, stream=True)
    reads = frames // per_read
    with tempfile.TemporaryDirectory() as tmp:
        if path == "tls-in":
            tls, client, outgoing = tls_pair(Path(tmp), inner)
            chunks = []
            for _ in range(reads):
                for _ in range(per_read):  # one record per frame, as uclient writes them
                    client.write(frame)
                chunks.append(outgoing.read())
            feed = tls.data_received
        else:
            inner().connection_made(NullTransport())  # type: ignore[arg-type]
            chunks = [frame * per_read] * reads
            feed = made[0].data_received
        sink, relay = udp(), udp()
        routes = {CHANNEL: sink.getsockname()}
        server.allocations[made[0].client] = SimpleNamespace(  # type: ignore[assignment]
            routes=routes, channels=routes, relay=SimpleNamespace(sock=relay, sendto=relay.sendto)
        )
        if not client_only:
            for chunk in chunks:
                feed(chunk)
            relayed = server.stats.cluster_tx_packets
            assert relayed == reads * per_read, f"relayed {relayed} of {reads * per_read}"


async def egress(path: str, per_wake: int, size: int, frames: int, peer_only: bool) -> None:
    peer, relay = udp(), udp()
    relay.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    transport: Any = NullTransport()
    with tempfile.TemporaryDirectory() as tmp:
        if path == "tls-out":
            transport = TlsTransport(tls_pair(Path(tmp), asyncio.Protocol)[0])
        client = StreamClient(transport, ("192.0.2.1", 5000))
        allocation = SimpleNamespace(
            permissions={"127.0.0.1": float("inf")},
            peer_routes={peer.getsockname(): CHANNEL},
            client=client,
        )
        stats = ListenerStats()
        drain = relay_drain(allocation, relay, stats)  # type: ignore[arg-type]
        payload, to = b"y" * size, relay.getsockname()
        for _ in range(frames // per_wake):
            for _ in range(per_wake):
                peer.sendto(payload, to)
            if not peer_only:  # alone, the peer's datagrams pile up and the kernel drops them
                drain()
        if not peer_only:
            sent = stats.tx_packets
            assert sent == frames // per_wake * per_wake, f"sent {sent}"


def relay_drain(allocation: Any, sock: socket.socket, stats: ListenerStats) -> Callable[[], None]:
    """What the server reads a relay socket with: ``datapath.relay_drain`` where the measured
    tree has it, else (trees before it) ``RelayReceiver``'s."""
    make = getattr(datapath, "relay_drain", None)
    if make is not None:
        return make(allocation, sock, stats)  # type: ignore[no-any-return]
    return datapath.RelayReceiver(allocation, sock, stats).drain


def run_path(path: str, batch: int, size: int, frames: int, alone: bool) -> None:
    """One path once; ``alone``: only the client's (or the peer's) side of it."""
    step = ingress if path.endswith("-in") else egress
    asyncio.run(step(path, batch, size, frames, alone))


def collected(argv: list[str]) -> int:
    """Instructions callgrind counted for ``argv`` (a python command line)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *argv],
            capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
    match = _COLLECTED.search(out.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count: {out.stderr[-300:]}")
    return int(match.group(1))


def per_frame(path: str, batch: int, size: int, frames: int, package: Path | None) -> float:
    """Instructions per frame: (3N run - N run) - the same for the client's side alone.
    ``package``: the stunner package to measure (a directory first on the child's path holds
    only a link to it), else this tree's."""
    with tempfile.TemporaryDirectory() as links:
        if package is not None:
            (Path(links) / "stunner").symlink_to(package.resolve())
        code = (
            f"import sys; sys.path.insert(0, {links!r}); "
            "from bench.stream_instructions import main; sys.exit(main(sys.argv[1:]))"
        )

        def count(n: int, alone: bool) -> int:
            argv = [sys.executable, "-c", code, "--run", path, "--batch", str(batch)]
            argv += ["--size", str(size), "--frames", str(n)]
            return collected([*argv, "--alone"] if alone else argv)

        served = count(3 * frames, False) - count(frames, False)
        alone = count(3 * frames, True) - count(frames, True)
    return (served - alone) / (2 * frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.stream_instructions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--paths", default=",".join(PATHS), help=f"some of {', '.join(PATHS)}")
    parser.add_argument("--batches", default="1,20", help="frames per read (or wake-up)")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--frames", type=int, default=4000, help="N (the long run has 3N)")
    parser.add_argument("--stunner", type=Path, help="another tree's stunner package directory")
    parser.add_argument("--run", choices=PATHS, help=argparse.SUPPRESS)  # one measured child
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--alone", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        import stunner  # which tree is measured: the parent checks it

        sys.stderr.write(f"stunner from {Path(stunner.__file__).parent}\n")
        run_path(args.run, args.batch, args.size, args.frames, args.alone)
        return 0
    if shutil.which("valgrind") is None:
        sys.stdout.write("valgrind is not installed (apt-get install valgrind)\n")
        return 2
    for path in args.paths.split(","):
        for batch in map(int, args.batches.split(",")):
            cost = per_frame(path, batch, args.size, args.frames, args.stunner)
            sys.stdout.write(f"{path:8s} {batch:3d} per read: {cost:,.0f} instructions/frame\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
