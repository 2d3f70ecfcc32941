"""A counting UDP echo peer: the backend a TURN client reaches through the relay.

Its counts are an independent truth for the relay's metrics: every datagram it receives was
relayed client-to-peer, every datagram it sends is one the relay should carry back (or drop,
and say why). One counting core, three ways to run it:

- `EchoPeer`: on the caller's asyncio loop (in-process tests);
- `EchoThread`: in a thread, for synchronous harnesses (soak);
- `EchoProcess`: in a child process, so it never competes for the caller's GIL (bench); the
  parent asks for counts over a pipe (a line ``c`` in, the five counts out) and ends it by
  closing stdin. It also ends by itself after ``--lifetime`` seconds. With ``--detached`` it
  reads no control pipe and runs until a signal: a peer started by hand, e.g. inside a
  cluster (``python -m testkit.echo HOST --port PORT --detached [--longer 13 --twice-every 3]``).

Options, for tests of what a real peer may do:

- ``answer``: what to send back for one datagram. The default mirrors it; `Asymmetric` answers
  with another size and answers every n-th datagram twice; `Longer` answers longer, and twice
  by the datagram's own sequence number, so a sender can predict every answer even when
  several senders share the peer.
- ``send(data, addr)``: an unsolicited datagram from the peer's own address (a peer that talks
  first, or floods a relay address that has no permission for it). It counts as sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

Address = tuple[str, int]
Answer = Callable[[bytes], Sequence[bytes]]  # the datagrams to send back for one received
BATCH = 256  # datagrams read before looking at the stop flag or the control pipe again
REPO = Path(__file__).resolve().parents[1]  # where ``python -m testkit.echo`` resolves


@dataclass(frozen=True)
class EchoCounts:
    """Datagrams and bytes received and sent so far, and sends the kernel refused."""

    packets: int = 0
    bytes: int = 0
    sent_packets: int = 0
    sent_bytes: int = 0
    send_errors: int = 0

    def __sub__(self, other: EchoCounts) -> EchoCounts:
        return EchoCounts(
            self.packets - other.packets,
            self.bytes - other.bytes,
            self.sent_packets - other.sent_packets,
            self.sent_bytes - other.sent_bytes,
            self.send_errors - other.send_errors,
        )


class Asymmetric:
    """Answer with `size` bytes (the request's leading bytes, padded with ``.``, so a tag at the
    start survives), and every `twice_every`-th datagram twice (0: never)."""

    def __init__(self, size: int, twice_every: int = 0) -> None:
        self.size = size
        self.twice_every = twice_every
        self._seen = 0

    def __call__(self, data: bytes) -> Sequence[bytes]:
        self._seen += 1
        out = data[: self.size].ljust(self.size, b".")
        twice = self.twice_every > 0 and self._seen % self.twice_every == 0
        return (out, out) if twice else (out,)


class Longer:
    """Answer with the datagram plus `extra` bytes (0xA5), and twice when its sequence number
    (big-endian, bytes 4-8; 1 if shorter) is a multiple of `twice_every` (0: never).

    A pure function of the datagram: the sender computes the answers it must get with the
    same object, whoever else talks to the peer."""

    def __init__(self, extra: int, twice_every: int = 0) -> None:
        self.extra = extra
        self.twice_every = twice_every

    def __call__(self, data: bytes) -> Sequence[bytes]:
        out = data + b"\xa5" * self.extra
        seq = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 1
        twice = self.twice_every > 0 and seq % self.twice_every == 0
        return (out, out) if twice else (out,)


class EchoCounter:
    """The counts, updated a batch at a time under a lock (read from another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0, 0]

    def add(self, packets: int, nbytes: int, sent: int, sent_bytes: int, errors: int) -> None:
        with self._lock:
            c = self._counts
            c[0] += packets
            c[1] += nbytes
            c[2] += sent
            c[3] += sent_bytes
            c[4] += errors

    def counts(self) -> EchoCounts:
        with self._lock:
            return EchoCounts(*self._counts)


def _drain(sock: socket.socket, answer: Answer | None, counter: EchoCounter) -> None:
    """Answer up to BATCH queued datagrams on a non-blocking socket, then count them once."""
    packets = nbytes = sent = sent_bytes = errors = 0
    recvfrom, sendto = sock.recvfrom, sock.sendto
    for _ in range(BATCH):
        try:
            data, addr = recvfrom(65535)
        except BlockingIOError:
            break
        packets += 1
        nbytes += len(data)
        for out in (data,) if answer is None else answer(data):
            try:
                sendto(out, addr)
            except OSError:
                errors += 1
            else:
                sent += 1
                sent_bytes += len(out)
    counter.add(packets, nbytes, sent, sent_bytes, errors)


def _send(sock: socket.socket, data: bytes, addr: Address, counter: EchoCounter) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        counter.add(0, 0, 0, 0, 1)
    else:
        counter.add(0, 0, 1, len(data), 0)


def _udp_socket(host: str, port: int, buffer: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------------------------
# On the caller's event loop


class EchoPeer(asyncio.DatagramProtocol):
    """The echo peer on the running asyncio loop: ``peer = await EchoPeer.start(host)``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.counter = EchoCounter()
        self.sources: set[Address] = set()  # every address that sent to it
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(
        cls, host: str = "127.0.0.1", port: int = 0, answer: Answer | None = None
    ) -> EchoPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(lambda: cls(answer), local_addr=(host, port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.sources.add(addr)
        assert self.transport is not None
        answers = (data,) if self.answer is None else self.answer(data)
        for out in answers:
            self.transport.sendto(out, addr)
        self.counter.add(1, len(data), len(answers), sum(map(len, answers)), 0)

    def send(self, data: bytes, addr: Address) -> None:
        """An unsolicited datagram from the peer's address."""
        assert self.transport is not None
        self.transport.sendto(data, addr)
        self.counter.add(0, 0, 1, len(data), 0)

    def counts(self) -> EchoCounts:
        return self.counter.counts()

    @property
    def received(self) -> int:
        return self.counter.counts().packets

    @property
    def received_bytes(self) -> int:
        return self.counter.counts().bytes

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------------------------------------
# In a thread


class EchoThread:
    """The echo peer in a daemon thread, for synchronous callers; use as a context manager."""

    def __init__(
        self, host: str, port: int = 0, answer: Answer | None = None, buffer: int = 1 << 20
    ) -> None:
        self._sock = _udp_socket(host, port, buffer)
        self.address: Address = self._sock.getsockname()
        self.answer = answer
        self.counter = EchoCounter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-peer", daemon=True)

    def counts(self) -> EchoCounts:
        return self.counter.counts()

    def send(self, data: bytes, addr: Address) -> None:
        """An unsolicited datagram from the peer's address."""
        _send(self._sock, data, addr, self.counter)

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if sel.select(timeout=0.1):
                    _drain(self._sock, self.answer, self.counter)

    def __enter__(self) -> EchoThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


# --------------------------------------------------------------------------------------------
# In a child process


def serve(
    sock: socket.socket, lifetime: float, answer: Answer | None, control: bool = True
) -> None:
    """The child's loop: echo until stdin closes or `lifetime` passes; answer count requests.
    Without `control`, stdin is not read: the peer runs until `lifetime` or a signal."""
    counter = EchoCounter()
    deadline = time.monotonic() + lifetime
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ, "data")
        if control:
            sel.register(sys.stdin, selectors.EVENT_READ, "control")
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "data":
                    _drain(sock, answer, counter)
                    continue
                if not sys.stdin.readline():
                    return
                c = counter.counts()
                fields = (c.packets, c.bytes, c.sent_packets, c.sent_bytes, c.send_errors)
                sys.stdout.write(" ".join(map(str, fields)) + "\n")
                sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.echo", description="counting UDP echo peer (testkit)"
    )
    parser.add_argument("host")
    parser.add_argument("--port", type=int, default=0, help="default: one the kernel picks")
    parser.add_argument(
        "--lifetime", type=float, help="seconds until it exits (default 3600; detached: none)"
    )
    parser.add_argument("--size", type=int, default=0, help="answer with this many bytes")
    parser.add_argument("--longer", type=int, default=0, help="answer this many bytes longer")
    parser.add_argument(
        "--twice-every",
        type=int,
        default=0,
        help="--size: answer every n-th datagram twice; --longer: those whose sequence number "
        "(bytes 4-8) is a multiple of n",
    )
    parser.add_argument(
        "--detached",
        action="store_true",
        help="no control pipe on stdin: run until a signal (a peer inside a cluster)",
    )
    args = parser.parse_args(argv)
    if args.size and args.longer:
        parser.error("--size and --longer exclude each other")
    answer: Answer | None = None
    if args.size:
        answer = Asymmetric(args.size, args.twice_every)
    elif args.longer:
        answer = Longer(args.longer, args.twice_every)
    sock = _udp_socket(args.host, args.port, 4 << 20)
    sys.stdout.write(f"ready {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    lifetime = args.lifetime or (float("inf") if args.detached else 3600.0)
    with contextlib.suppress(KeyboardInterrupt):
        serve(sock, lifetime, answer, control=not args.detached)
    sock.close()
    return 0


class EchoProcess:
    """Handle on an echo child process; use as a context manager."""

    def __init__(
        self, host: str, lifetime: float = 3600.0, size: int = 0, twice_every: int = 0
    ) -> None:
        self.host = host
        self.argv = [sys.executable, "-m", "testkit.echo", host, "--lifetime", str(lifetime)]
        if size:
            self.argv += ["--size", str(size), "--twice-every", str(twice_every)]
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> Address:
        return self.host, self.port

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> EchoProcess:
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=REPO
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
        if len(fields) != 5:
            raise RuntimeError("echo peer stopped answering")
        return EchoCounts(*map(int, fields))

    def close(self) -> None:
        """Close its control pipe (it exits), then reap it; killed if it does not go in 5 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
