"""UDP sockets drained on readiness, in place of asyncio's datagram transports.

Why not ``loop.create_datagram_endpoint``: uvloop's UDPTransport reads one datagram per
readiness callback into a fresh 256 kB ``bytes``, and resolves the destination of every
``sendto`` three times (two address conversions in Cython, then ``socket.sendto`` parses it
again). Here the loop calls the receiver's ``drain`` on readiness, which reads a whole batch
of datagrams at once (stunner.batchio) and sends views of it: no per-datagram ``bytes`` on the
relay paths.

Sends never queue: a UDP datagram that does not fit the send buffer (``EAGAIN``), or that the
kernel refuses (``EMSGSIZE`` with DONT-FRAGMENT, ``ENETUNREACH``), is dropped as the network
would drop it, and is not counted as sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from .stun import Address

SOCKET_BUFFER = 4 * 1024 * 1024
"""Receive and send buffer of every UDP socket that carries relayed traffic: listener sockets
and relay sockets alike. A relay socket takes a whole TCP/TLS listener's burst for one client
(the kernel's 208 KiB default overflowed at 2 MB in one burst); the kernel doubles the value
and caps it at net.core.[rw]mem_max."""


def set_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> None:
    """Ask for ``size`` bytes of receive and send buffer (as coturn does for its sockets)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, size)


class DatagramSocket:
    """A non-blocking UDP socket registered with the running loop until ``close()``.

    ``sendto`` is the socket's own method: it raises ``OSError`` when the kernel drops the
    datagram, and the caller decides whether that is worth counting.
    """

    __slots__ = ("_fd", "_loop", "before_close", "closed", "sendto", "sock")

    def __init__(
        self,
        sock: socket.socket,
        on_readable: Callable[[], None],
        before_close: Callable[[], None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.before_close = before_close  # e.g. send what waits to leave through the socket
        self.sock = sock
        self.sendto: Callable[[bytes | memoryview, Address], int] = sock.sendto
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, on_readable)
        self.closed = False

    def close(self) -> None:
        """Stop reading and close the socket now, so that its port can be bound again at once."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        if self.before_close is not None:
            self.before_close()
        self.sock.close()
