"""Relay sockets: bound on ports from the listener's relay port range.

(What arrives on them is relayed by ``stunner.turn.datapath.RelayReceiver``.)
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Iterator

from ..udp import set_buffers

# Created non-blocking (Linux: one flag, no second system call); elsewhere made so after.
_NONBLOCKING_DGRAM = socket.SOCK_DGRAM | getattr(socket, "SOCK_NONBLOCK", 0)


class RelayPortAllocator:
    """Binds relay sockets on ports from the listener's ``min_relay_port..max_relay_port``."""

    RANDOM_TRIES = 64

    def __init__(self, host: str, min_port: int, max_port: int) -> None:
        self.host = host
        self.min_port = min_port
        self.max_port = max_port

    def _candidates(self, even: bool) -> Iterator[int]:
        """Ports to try, lazily: the first one nearly always binds, so a big range costs one
        random draw per allocation, not a sample of RANDOM_TRIES ports."""
        ports = range(self.min_port, self.max_port + 1)
        if even:
            ports = range(self.min_port + (self.min_port & 1), self.max_port + 1, 2)
        if not ports:
            return
        if len(ports) <= 4 * self.RANDOM_TRIES:
            # A small range: every port once, from a random start.
            start = random.randrange(len(ports))
            for i in range(len(ports)):
                yield ports[(start + i) % len(ports)]
            return
        for _ in range(self.RANDOM_TRIES):
            yield ports[random.randrange(len(ports))]

    def bind(self, even: bool = False) -> socket.socket | None:
        """A bound UDP socket, or None when no port in the range is free (answer 508)."""
        for port in self._candidates(even):
            try:
                sock = socket.socket(socket.AF_INET, _NONBLOCKING_DGRAM)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return None  # out of descriptors: 508, not a crash
                raise
            try:
                sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            if sock.getblocking():  # no SOCK_NONBLOCK on this system
                sock.setblocking(False)
            set_buffers(sock)  # as big as a listener's: a client's burst lands here whole
            return sock
        return None
