"""The backend peer both servers relay to: a counting UDP echo in its own process.

Its count of received datagrams is the exact number relayed client-to-peer, for stunnerd and
coturn alike. It runs in a child process so it never competes for the bench's GIL; the parent
asks for counts over a pipe (a line ``c`` in, ``RX_PACKETS RX_BYTES TX_ERRORS`` out) and ends it
by closing stdin. It also ends by itself after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from . import child

BATCH = 256  # datagrams echoed before looking at the control pipe again


@dataclass(frozen=True)
class EchoCounts:
    packets: int
    bytes: int
    send_errors: int


def serve(sock: socket.socket, lifetime: float) -> None:
    packets = nbytes = errors = 0
    deadline = time.monotonic() + lifetime
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "data")
    sel.register(sys.stdin, selectors.EVENT_READ, "control")
    recvfrom, sendto = sock.recvfrom, sock.sendto
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "control":
                    line = sys.stdin.readline()
                    if not line:
                        return
                    sys.stdout.write(f"{packets} {nbytes} {errors}\n")
                    sys.stdout.flush()
                    continue
                for _ in range(BATCH):
                    try:
                        data, addr = recvfrom(65535)
                    except BlockingIOError:
                        break
                    packets += 1
                    nbytes += len(data)
                    try:
                        sendto(data, addr)
                    except OSError:
                        errors += 1
    finally:
        sel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="counting UDP echo peer")
    parser.add_argument("host")
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((args.host, 0))
    sock.setblocking(False)
    sys.stdout.write(f"ready {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    serve(sock, args.lifetime)
    sock.close()
    return 0


class EchoPeer:
    """Handle on the echo child process; use as a context manager."""

    def __init__(self, host: str, lifetime: float = 3600.0) -> None:
        self.host = host
        self.lifetime = lifetime
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> EchoPeer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", self.host, "--lifetime", str(self.lifetime)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "ready":
                raise RuntimeError(f"echo peer did not start: {line!r}")
            self.port = int(line[1])
        except BaseException:
            self.close()
            raise
        return self

    def counts(self) -> EchoCounts:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("c\n")
        proc.stdin.flush()
        fields = proc.stdout.readline().split()
        if len(fields) != 3:
            raise RuntimeError("echo peer stopped answering")
        return EchoCounts(int(fields[0]), int(fields[1]), int(fields[2]))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # end of its control pipe: it exits
        except OSError:
            pass
        child.stop(proc, None, timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
