"""The backend peers inside the cluster: UDP echo servers that count what they saw.

Their counters are a second, independent truth for the cluster metrics: every datagram one
receives was relayed by stunnerd to a peer (cluster tx), every answer is a datagram from an
admitted peer (cluster rx).

The asymmetric peer answers each datagram with `ASYMMETRIC_EXTRA` more bytes, and twice when
its sequence number (bytes 4-8, see `clients.payload`) is a multiple of `TWICE_EVERY`: rx and
tx differ in packets and bytes, so a gateway that swaps directions cannot pass. Run either
peer where a cluster holds it (external target): `python -m e2e.echo HOST:PORT [--asymmetric]`.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import struct
import threading
from dataclasses import dataclass

ASYMMETRIC_EXTRA = 13  # odd: the ChannelData frames back also need different padding
TWICE_EVERY = 3


def answers(data: bytes, asymmetric: bool) -> list[bytes]:
    """What a peer sends back for one datagram: the same bytes, or the asymmetric answers."""
    if not asymmetric:
        return [data]
    reply = data + bytes([0xA5]) * ASYMMETRIC_EXTRA
    seq = struct.unpack_from("!I", data, 4)[0] if len(data) >= 8 else 1
    return [reply, reply] if seq % TWICE_EVERY == 0 else [reply]


@dataclass(frozen=True)
class EchoCounts:
    """Datagrams and payload bytes received (= echoed) so far."""

    packets: int = 0
    bytes: int = 0

    def __sub__(self, other: EchoCounts) -> EchoCounts:
        return EchoCounts(self.packets - other.packets, self.bytes - other.bytes)


class EchoBackend:
    """UDP echo on `host`, run in a thread; use as a context manager."""

    def __init__(self, host: str, port: int = 0, *, asymmetric: bool = False) -> None:
        self.asymmetric = asymmetric
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
                    for reply in answers(data, self.asymmetric):
                        self._sock.sendto(reply, addr)

    def __enter__(self) -> EchoBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def main(argv: list[str] | None = None) -> None:
    """A peer for the external target, e.g. a pod in the cluster: runs until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m e2e.echo", description=main.__doc__)
    parser.add_argument("address", metavar="HOST:PORT")
    parser.add_argument("--asymmetric", action="store_true", help="answer bigger, sometimes twice")
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    with EchoBackend(host, int(port), asymmetric=args.asymmetric) as peer:
        print(f"{'asymmetric' if args.asymmetric else 'echo'} peer on {peer.address}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
