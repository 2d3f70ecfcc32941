"""The backend peer inside the cluster: a UDP echo server that counts what it saw.

Its counters are a second, independent truth for the cluster metrics: every datagram it
receives was relayed by stunnerd to a peer (cluster tx), every echo is a datagram from an
admitted peer (cluster rx).
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class EchoCounts:
    """Datagrams and payload bytes received (= echoed) so far."""

    packets: int = 0
    bytes: int = 0

    def __sub__(self, other: EchoCounts) -> EchoCounts:
        return EchoCounts(self.packets - other.packets, self.bytes - other.bytes)


class EchoBackend:
    """UDP echo on `host`, run in a thread; use as a context manager."""

    def __init__(self, host: str, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((host, port))
        self._sock.setblocking(False)
        self.address: tuple[str, int] = self._sock.getsockname()
        self._packets = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-backend", daemon=True)

    def counts(self) -> EchoCounts:
        with self._lock:
            return EchoCounts(self._packets, self._bytes)

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=0.1):
                    continue
                while True:
                    try:
                        data, addr = self._sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    with self._lock:
                        self._packets += 1
                        self._bytes += len(data)
                    self._sock.sendto(data, addr)

    def __enter__(self) -> EchoBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
