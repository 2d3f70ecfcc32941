"""turncat: tunnel local UDP clients to a peer through TURN, one allocation per client.

A testing tool in the spirit of upstream STUNner's turncat: it reaches a service behind a TURN
server (e.g. inside a Kubernetes cluster behind stunnerd) as if it were local::

    turncat udp://127.0.0.1:5000 turn://user:pass@192.0.2.1:3478 udp://10.0.0.1:9001

Each distinct local client source address gets its own allocation, so the peer sees one relayed
address per client. Packets from anyone but the peer arriving on an allocation are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

from aioice.turn import create_turn_endpoint

from stunner import __version__, config
from stunner.cli._args import OneLineParser
from stunner.constants import DEFAULT_ALLOCATION_LIFETIME
from stunner.logs import setup_logging

Address = tuple[str, int]

log = logging.getLogger("stunner.turncat")

MAX_PENDING = 256  # datagrams queued per client while its allocation is being made
RETRY_AFTER = 2.0  # seconds to drop a client's datagrams after its allocation failed
CLOSE_TIMEOUT = 5.0  # seconds to wait for the server to confirm an allocation's deletion
NO_DTLS = "DTLS is not supported, use TLS (turns://...?transport=tcp)"


class TurnCatSession(asyncio.DatagramProtocol):
    """One local client and its TURN allocation; receives what the allocation relays."""

    def __init__(self, cat: TurnCat, client: Address) -> None:
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_seen = time.monotonic()
        self.sent = 0  # datagrams from the client handed to the allocation
        self.received = 0  # datagrams from the peer handed to the client
        self.opening: asyncio.Task[None] | None = None
        self._cat = cat
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def relayed_address(self) -> Address | None:
        if self.transport is None:
            return None
        return cast(Address | None, self.transport.get_extra_info("sockname"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._cat._from_peer(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.warning("client %s: relaying to the peer failed: %s", _fmt(self.client), exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        self._cat._forget(self)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the allocation is gone; False if that took longer than `timeout`."""
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        except TimeoutError:
            return False
        return True

    def __repr__(self) -> str:
        return f"turncat-session({_fmt(self.client)})"


class _ClientSide(asyncio.DatagramProtocol):
    def __init__(self, cat: TurnCat) -> None:
        self._cat = cat

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._cat._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        # Typically ICMP port unreachable from a client that went away.
        log.debug("local socket: %s", exc)


class TurnCat:
    """The relay: a local UDP socket whose clients each get a TURN allocation to `peer`.

    Use ``async with TurnCat(...) as cat`` or `start` and `close`. `peer` may be a host name; it
    is resolved once, in `start`.
    """

    def __init__(
        self,
        listen: Address,
        server: config.TurnUri,
        peer: Address,
        *,
        idle_timeout: float = 60.0,
        insecure: bool = False,
        lifetime: int = DEFAULT_ALLOCATION_LIFETIME,
    ) -> None:
        if server.protocol == "DTLS":
            raise ValueError(NO_DTLS)
        self.listen = listen
        self.server = server
        self.peer = peer
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime
        self.dropped = 0  # client datagrams dropped while no allocation could take them
        self.failures = 0  # allocations that could not be made
        self._ssl = _client_ssl_context(insecure) if server.protocol == "TLS" else None
        self._sessions: dict[Address, TurnCatSession] = {}
        self._retry_at: dict[Address, float] = {}
        self._local: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def sessions(self) -> Mapping[Address, TurnCatSession]:
        return MappingProxyType(self._sessions)

    @property
    def local_address(self) -> Address:
        if self._local is None:
            raise RuntimeError("turncat is not started")
        return cast(Address, self._local.get_extra_info("sockname")[:2])

    async def start(self) -> Address:
        """Resolve the peer and bind the local socket; returns the bound local address.

        Raises OSError with a message saying which of the two failed."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(*self.peer, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise OSError(f"cannot resolve peer {self.peer[0]}: {exc}") from exc
        self.peer = cast(Address, infos[0][4][:2])
        try:
            self._local, _ = await loop.create_datagram_endpoint(
                lambda: _ClientSide(self), local_addr=self.listen
            )
        except OSError as exc:
            raise OSError(f"cannot listen on udp://{_fmt(self.listen)}: {exc}") from exc
        if self.idle_timeout > 0:
            self._sweeper = asyncio.create_task(self._sweep())
        log.info(
            "listening on udp://%s, TURN server %s, peer udp://%s",
            _fmt(self.local_address),
            _fmt((self.server.host, self.server.port)),
            _fmt(self.peer),
        )
        return self.local_address

    async def close(self) -> None:
        """Stop listening and delete every allocation (waiting up to CLOSE_TIMEOUT)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._local is not None:
            self._local.close()
        await asyncio.gather(*(self._close_session(s) for s in list(self._sessions.values())))

    async def __aenter__(self) -> TurnCat:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Hot path: one synchronous call per datagram in either direction.

    def _from_client(self, data: bytes, client: Address) -> None:
        session = self._sessions.get(client)
        if session is None:
            if time.monotonic() < self._retry_at.get(client, 0.0):
                self.dropped += 1
                return
            session = self._sessions[client] = TurnCatSession(self, client)
            session.opening = asyncio.create_task(self._open(session))
        session.last_seen = time.monotonic()
        if session.transport is not None:
            session.sent += 1
            session.transport.sendto(data, self.peer)
        elif len(session.pending) < MAX_PENDING:
            session.pending.append(data)
        else:
            self.dropped += 1

    def _from_peer(self, session: TurnCatSession, data: bytes, addr: Address) -> None:
        if addr[:2] != self.peer or self._local is None:
            log.debug("client %s: dropped datagram from %s", _fmt(session.client), _fmt(addr))
            return
        session.last_seen = time.monotonic()
        session.received += 1
        self._local.sendto(data, session.client)

    # Allocation life cycle.

    async def _open(self, session: TurnCatSession) -> None:
        server = self.server
        try:
            await create_turn_endpoint(
                lambda: session,
                (server.host, server.port),
                server.username,
                server.password,
                lifetime=self.lifetime,
                ssl=self._ssl,
                transport="udp" if server.protocol == "UDP" else "tcp",
            )
        except Exception as exc:
            self.failures += 1
            log.warning(
                "client %s: TURN allocation failed: %s: %s",
                _fmt(session.client),
                type(exc).__name__,
                exc,
            )
            self._retry_at[session.client] = time.monotonic() + RETRY_AFTER
            self._forget(session)
            return
        assert session.transport is not None  # connection_made ran
        log.info(
            "client %s: relayed address %s", _fmt(session.client), _fmt(session.relayed_address)
        )
        pending, session.pending = session.pending, []
        for data in pending:
            session.sent += 1
            session.transport.sendto(data, self.peer)

    def _forget(self, session: TurnCatSession) -> None:
        if self._sessions.get(session.client) is session:
            del self._sessions[session.client]

    async def _close_session(self, session: TurnCatSession) -> None:
        self._forget(session)
        if session.opening is not None and not session.opening.done():
            session.opening.cancel()
            await asyncio.gather(session.opening, return_exceptions=True)
        if session.transport is not None:
            session.transport.close()  # deletes the allocation
            if not await session.wait_closed(CLOSE_TIMEOUT):
                log.warning("client %s: allocation deletion timed out", _fmt(session.client))
        log.info(
            "client %s: closed after %d/%d datagrams out/in",
            _fmt(session.client),
            session.sent,
            session.received,
        )

    async def _sweep(self) -> None:
        interval = min(self.idle_timeout / 2, 5.0)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.idle_timeout
            idle = [s for s in self._sessions.values() if s.last_seen <= deadline]
            for session in idle:
                log.info("client %s: idle, closing", _fmt(session.client))
            await asyncio.gather(*(self._close_session(s) for s in idle))


def _client_ssl_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _fmt(addr: Address | None) -> str:
    if addr is None:
        return "-"
    host, port = addr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# Command line


def parse_udp_uri(uri: str, *, field: str) -> Address:
    """``udp://host:port`` to an address; host names are kept for later resolution."""
    problem = f"{field}: expected udp://<host>:<port>, got {uri!r}"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise config.ConfigError(problem) from None
    if parts.scheme.lower() != "udp" or not uri[3:].startswith("://") or not parts.hostname:
        raise config.ConfigError(problem)
    if not port or parts.path not in ("", "/") or parts.query or parts.username is not None:
        raise config.ConfigError(problem)
    return parts.hostname, port


def _build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="turncat",
        description="Tunnel local UDP clients to a peer through a TURN server.",
        epilog="example: turncat udp://127.0.0.1:5000 turn://user:pass@192.0.2.1:3478 "
        "udp://10.0.0.1:9001",
    )
    parser.add_argument("client", help="local listener, udp://<addr>:<port>")
    parser.add_argument(
        "server",
        help="TURN server, turn://<user>:<pass>@<addr>:<port>[?transport=udp|tcp|tls] "
        "(turns:// means TLS; credentials may be percent-encoded)",
    )
    parser.add_argument("peer", help="peer to reach through the relay, udp://<addr>:<port>")
    parser.add_argument(
        "-l", "--log", default="all:WARN", metavar="LEVEL", help="e.g. all:INFO,turncat:DEBUG"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log all:DEBUG")
    parser.add_argument(
        "-i", "--insecure", action="store_true", help="accept any TLS server certificate"
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="delete a client's allocation after this long without traffic (0: never)",
    )
    parser.add_argument("--version", action="version", version=f"turncat (stunner) {__version__}")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Options:
    client: Address
    server: config.TurnUri
    peer: Address
    log: str
    insecure: bool
    idle_timeout: float


def parse_args(argv: list[str] | None) -> Options:
    """Parse and check the command line; a problem exits with status 2 (SystemExit)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        server = config.parse_turn_uri(args.server, field="server")
        if server.protocol == "DTLS":
            raise config.ConfigError(f"server: {NO_DTLS}")
        return Options(
            client=parse_udp_uri(args.client, field="client"),
            server=server,
            peer=parse_udp_uri(args.peer, field="peer"),
            log=_checked_loglevel("all:DEBUG" if args.verbose else args.log),
            insecure=args.insecure,
            idle_timeout=args.idle_timeout,
        )
    except config.ConfigError as exc:
        parser.error(str(exc))


def _checked_loglevel(spec: str) -> str:
    config.parse_loglevel(spec, field="--log")
    return spec


async def _serve(options: Options) -> int:
    cat = TurnCat(
        options.client,
        options.server,
        options.peer,
        idle_timeout=options.idle_timeout,
        insecure=options.insecure,
    )
    try:
        await cat.start()
    except OSError as exc:
        print(f"turncat: {exc}", file=sys.stderr)
        await cat.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await cat.close()
    return 0


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux dependency
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(argv)
    except SystemExit as exc:  # bad arguments, --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    setup_logging(options.log)
    return _run(_serve(options))


if __name__ == "__main__":
    sys.exit(main())
