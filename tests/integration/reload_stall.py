"""How long a config reload can stall relaying: a real stunnerd (``-w``), a TURN client that
pings an echo peer through it every 10 ms, and bad config files written under it.

Used by test_reload_stall.py, and runnable by hand against any source tree to get the figures
in docs/stunnerd.md (a tree without the reload bounds needs minutes and ~2 GiB for the alias
bomb, and writes a log line of hundreds of MB):

    python -m tests.integration.reload_stall [--root TREE]

Each bad file is written (atomically, as the kubelet swaps a ConfigMap) under a fresh stunnerd;
the largest gap between two echoes is taken from that moment until stunnerd has logged its
verdict, plus 0.5 s. The pinger's own largest gap between two sends is printed beside it: on a
shared machine the client gets descheduled too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aioice.turn import create_turn_endpoint

from testkit.echo import EchoPeer
from testkit.ports import free_port
from testkit.wait import poll_async

HOST = "127.0.0.1"
PING_INTERVAL = 0.01
SETTLE = 0.5  # seconds of pings kept in a file's window after stunnerd's verdict
VERDICTS = (b"config rejected", b" applied in ")  # the daemon's log lines for a new file


def alias_bomb() -> str:
    """A "billion laughs" YAML config (under 400 bytes): nine levels of nine aliases."""
    text = "&a [" + ",".join(["lol"] * 9) + "]"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text = f"&{name} [{text}," + ",".join([f"*{prev}"] * 8) + "]"
    return f"version: v1alpha1\nadmin:\n  name: {text}\n"


def oversized(good: dict[str, Any], size: int) -> str:
    """A config that parses (a long YAML comment) but is `size` bytes long."""
    head = json.dumps(good) + "\n# "
    return head + "x" * (size - len(head) - 1) + "\n"


def late_error(good: dict[str, Any], size: int) -> str:
    """At most `size` bytes of valid YAML whose very last cluster endpoint is invalid."""
    head = yaml.safe_dump({k: v for k, v in good.items() if k != "clusters"})
    head += "clusters:\n  - name: peers\n    endpoints:\n"
    tail = "      - not-an-address\n"
    lines: list[str] = []
    room = size - len(head) - len(tail)
    i = 0
    while room > 24:
        line = f"      - 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n"
        lines.append(line)
        room -= len(line)
        i += 1
    return head + "".join(lines) + tail


def bad_certificate(good: dict[str, Any]) -> str:
    """The good config with its TLS listener's cert replaced by base64 of a broken PEM."""
    broken = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    bad = json.loads(json.dumps(good))
    for lis in bad["listeners"]:
        if lis["protocol"] == "TLS":
            lis["cert"] = base64.b64encode(broken).decode()
    return json.dumps(bad)


def bad_files(good: dict[str, Any]) -> dict[str, Callable[[], str]]:
    return {
        "alias bomb": alias_bomb,
        "50 MB file": lambda: oversized(good, 50 * 1000 * 1000),
        "1 MiB invalid file": lambda: late_error(good, (1 << 20) - 64),
        "bad certificate": lambda: bad_certificate(good),
    }


@dataclass
class Pinger:
    """Sends a ping every 10 ms through a TURN allocation; records when echoes arrive."""

    arrivals: list[float] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _transport: Any = None

    async def start(self, server: tuple[str, int], peer: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        arrivals = self.arrivals

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                arrivals.append(loop.time())

        self._transport, _ = await create_turn_endpoint(
            Receiver, server, username="user1", password="pass1", transport="udp"
        )
        self._task = asyncio.create_task(self._run(peer))
        await poll_async(lambda: len(arrivals) >= 5, timeout=10, what="first echoes")

    async def _run(self, peer: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._transport.sendto(len(self.sends).to_bytes(8, "big"), peer)
            self.sends.append(loop.time())
            await asyncio.sleep(PING_INTERVAL)

    def max_gap(self, start: float, end: float, times: list[float] | None = None) -> float:
        """The longest time without an echo (or, given `times`, without one of those) between
        `start` and `end`, in seconds."""
        times = self.arrivals if times is None else times
        inside = [t for t in times if start <= t <= end]
        before = [t for t in times if t < start][-1:]
        points = [*before, *inside, end]
        return max(b - a for a, b in itertools.pairwise(points))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()


class StallLab:
    """A stunnerd subprocess following `path`, serving UDP and TLS, with metrics and health."""

    def __init__(self, tmp: Path, cert: bytes, key: bytes, root: Path | None = None) -> None:
        self.tmp = tmp
        self.root = root
        self.path = tmp / "stunnerd.conf"
        self.log = tmp / "stunnerd.log"
        self.udp_port, self.tls_port = free_port(HOST, tcp=False), free_port(HOST, udp=False)
        self.metrics_port, self.health_port = free_port(HOST, udp=False), free_port(HOST, udp=False)
        self.good: dict[str, Any] = {
            "version": "v1alpha1",
            "admin": {
                "metrics_endpoint": f"http://{HOST}:{self.metrics_port}/metrics",
                "healthcheck_endpoint": f"http://{HOST}:{self.health_port}",
            },
            "auth": {"credentials": {"username": "user1", "password": "pass1"}},
            "listeners": [
                {"name": "udp", "protocol": "UDP", "address": HOST, "port": self.udp_port},
                {
                    "name": "tls",
                    "protocol": "TLS",
                    "address": HOST,
                    "port": self.tls_port,
                    "cert": base64.b64encode(cert).decode(),
                    "key": base64.b64encode(key).decode(),
                },
            ],
            "clusters": [{"name": "peers", "endpoints": [HOST]}],
        }
        for lis in self.good["listeners"]:
            lis["routes"] = ["peers"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self.sender_gap = 0.0

    def start(self) -> None:
        self.path.write_text(json.dumps(self.good))
        env = dict(os.environ)
        if self.root is not None:
            env["PYTHONPATH"] = str(self.root)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stunner.cli.stunnerd", "-c", str(self.path), "-w"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root or None,
            )

    def new_verdicts(self) -> int:
        """How many verdicts stunnerd logged since the last call, in whole lines."""
        with open(self.log, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(whole)
        return sum(whole.count(v) for v in VERDICTS)

    async def write_and_wait(
        self, text: bytes, pinger: Pinger, timeout: float
    ) -> tuple[float, bool]:
        """Write `text` as the config; the largest echo gap (s) until stunnerd's verdict (plus
        SETTLE), and whether a verdict came within `timeout` (if not, the gap until then)."""
        loop = asyncio.get_running_loop()
        temp = self.tmp / "next.conf"
        await asyncio.to_thread(temp.write_bytes, text)
        await asyncio.to_thread(os.sync)  # the 50 MB write settles before the window opens
        await asyncio.sleep(SETTLE)
        self.new_verdicts()
        start = loop.time()
        os.replace(temp, self.path)  # atomically, as the kubelet swaps a ConfigMap
        try:
            await poll_async(self.new_verdicts, timeout=timeout, interval=0.05, what="verdict")
            verdict = True
        except TimeoutError:
            verdict = False
        await asyncio.sleep(SETTLE)
        end = loop.time()
        self.sender_gap = pinger.max_gap(start, end, pinger.sends)  # the pinger's own stalls
        return pinger.max_gap(start, end), verdict

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def running(
    tmp: Path, cert: bytes, key: bytes, root: Path | None = None
) -> AsyncIterator[tuple[StallLab, EchoPeer, Pinger]]:
    """A StallLab's stunnerd serving, an echo peer, and a pinger already getting echoes."""
    lab = StallLab(tmp, cert, key, root)
    echo = await EchoPeer.start(HOST)
    pinger = Pinger()
    try:
        lab.start()
        await poll_async(lambda: b"serving TLS" in lab.log.read_bytes(), timeout=20)
        await pinger.start((HOST, lab.udp_port), echo.address)
        yield lab, echo, pinger
    finally:
        await pinger.stop()
        echo.close()
        lab.stop()


async def measure_one(root: Path | None, name: str, timeout: float) -> str:
    """One bad file against a fresh stunnerd from `root` (None: this tree): a line of figures."""
    from e2e.certs import self_signed

    made = self_signed(HOST)
    with tempfile.TemporaryDirectory() as tmp:
        async with running(Path(tmp), made.cert_pem, made.key_pem, root) as (lab, _, pinger):
            text = (await asyncio.to_thread(bad_files(lab.good)[name])).encode()
            gap, verdict = await lab.write_and_wait(text, pinger, timeout)
    late = "" if verdict else f", no verdict within {timeout:.0f} s"
    own = lab.sender_gap * 1000
    return f"{name}: max gap {gap * 1000:.0f} ms (pinger's own {own:.0f} ms{late})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="source tree to run stunnerd from")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per bad file")
    args = parser.parse_args()
    for name in bad_files({}):
        print(asyncio.run(measure_one(args.root, name, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
