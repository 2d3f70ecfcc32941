"""``python -m bench.instructions``: user-space instructions per relayed UDP datagram, exactly.

Why: a CPU-second rate on this shared 2-core machine moves by +-10% from run to run, so a 3%
change to the relay path cannot be judged from it. Valgrind's callgrind counts every
instruction stunnerd executes in user space (the kernel's share is not seen), the same count on
every run of a fixed workload. The workload here is fixed: ``--allocations`` UDP clients (made
by ``bench.driver``), each sending ``--burst`` ChannelData datagrams per round (interleaved
across the clients) to an echo peer
held in this process, which answers once the whole round has arrived; ``--rounds`` rounds.
Counting starts after set-up (``callgrind_control --zero``) and ends with a dump, so the figure
is what relaying costs: instructions / (2 x datagrams sent), a datagram relayed each way.

Bursts land in stunnerd's sockets faster than valgrind lets it run, so one wake-up mostly reads
a whole burst (per socket), as under load; ``--burst 1`` is the one-datagram-per-wake-up case.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stunner.stun import CHANNEL_MIN, pack_channel_data

from .driver import AllocationDriver
from .run import say
from .servers import Credentials, Stunnerd, binding_answered, http_status

HOST = "127.0.0.31"
PEER_HOST = "127.0.0.32"
READY_TIMEOUT = 240.0  # Python under valgrind starts some 50 times slower
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


class CallgrindStunnerd(Stunnerd):
    """stunnerd under ``valgrind --tool=callgrind``, counting from ``zero()`` to ``dump()``."""

    def __init__(
        self,
        workdir: Path,
        creds: Credentials,
        tree: Path | None,
        host: str = HOST,
        peer_host: str = PEER_HOST,
    ) -> None:
        super().__init__(workdir, host, creds, peer_host, baseline=tree)
        self.out = workdir / "callgrind.out"

    def command(self) -> list[str]:
        return [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self.out}",
            *[arg for arg in super().command() if arg != "-w"],  # no config polling timer
        ]

    def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://{self.host}:{self.health_port}/ready"
        while not (http_status(url, timeout=2) == 200 and binding_answered(self.host, self.port)):
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"stunnerd under valgrind did not start: {self.log_tail()}")
            time.sleep(0.5)

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, timeout=120)

    def instructions(self) -> int:
        """Instructions counted since ``--zero``, from the dump ``--dump`` wrote."""
        dumps = sorted(self.workdir.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        match = _TOTAL.search(dumps[-1].read_text(errors="replace"))
        if match is None:
            raise RuntimeError(f"no totals in {dumps[-1]}")
        return int(match.group(1))


def relay_rounds(
    clients: list[socket.socket],
    server: tuple[str, int],
    peer: socket.socket,
    burst: int,
    rounds: int,
    size: int,
) -> int:
    """Send ``rounds`` rounds of ``burst`` datagrams per client, echoed back whole: the number
    of datagrams sent one way (each came back)."""
    payloads = [bytes([k % 251]) * size for k in range(burst)]
    frames = [pack_channel_data(CHANNEL_MIN, p) for p in payloads]
    expected = len(clients) * burst
    for _ in range(rounds):
        for frame in frames:  # interleaved, as many smooth clients arrive
            for client in clients:
                client.sendto(frame, server)
        arrived = [peer.recvfrom(65536) for _ in range(expected)]
        for data, relay in arrived:
            peer.sendto(data, relay)
        for client in clients:
            for _ in range(burst):
                client.recv(65536)
    return rounds * expected


def measure(
    tree: Path | None,
    allocations: int,
    burst: int,
    rounds: int,
    size: int,
    keep: Path | None = None,
    idle: float = 0.0,
) -> float:
    creds = Credentials()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        server = CallgrindStunnerd(Path(tmp), creds, tree)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((PEER_HOST, 0))
        peer.settimeout(60)
        server.start()
        driver = AllocationDriver(
            (HOST, server.port), creds.user, creds.password, peer.getsockname()
        )
        try:
            result = driver.drive(allocations, timeout=300)
            if result.completed != allocations:
                raise RuntimeError(f"allocations: {result.to_json()}")
            for sock in driver.sockets:
                sock.setblocking(True)
                sock.settimeout(60)
            relay_rounds(driver.sockets, (HOST, server.port), peer, burst, 1, size)  # warm-up
            if idle:
                server.control("--zero")
                time.sleep(idle)
                server.control("--dump")
                say(f"idle for {idle} s: {server.instructions():,} instructions")
                for dump in Path(tmp).glob("callgrind.out.*"):
                    dump.unlink()
            server.control("--zero")
            started = time.monotonic()
            sent = relay_rounds(driver.sockets, (HOST, server.port), peer, burst, rounds, size)
            server.control("--dump")
            say(f"relaying took {time.monotonic() - started:.1f} s under valgrind")
            if keep is not None:
                for dump in Path(tmp).glob("callgrind.out*"):
                    shutil.copy(dump, keep)
            return server.instructions() / (2 * sent)
        finally:
            driver.close()
            server.stop()
            peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="another tree's stunner (git archive)")
    parser.add_argument("--allocations", type=int, default=1)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--idle", type=float, default=0.0, help="also count N idle seconds")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps to this directory")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench.instructions: valgrind (callgrind) is not installed")
    per = measure(
        args.tree, args.allocations, args.burst, args.rounds, args.size, args.keep, args.idle
    )
    say(
        f"{per:,.0f} instructions per relayed datagram "
        f"({args.allocations} allocation(s), bursts of {args.burst}, {args.rounds} rounds, "
        f"{args.size} B, tree {args.tree or 'this one'})"
    )


if __name__ == "__main__":
    main()
