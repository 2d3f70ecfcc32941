"""Worker processes: N stunnerd data planes sharing each listener port (SO_REUSEPORT).

One Python process is one core. With ``--workers N`` the supervisor runs N workers, each a full
data plane, and serves /metrics and health itself. Each worker pushes a snapshot of its
counters every ``PUBLISH_INTERVAL`` over a socketpair; the supervisor sums the latest snapshot
of every live worker. When a worker dies its last counters are folded into a base, so the
summed counters never go down (its gauges go, with its allocations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .stats import FIELDS, GAUGES, ListenerSample, add_values

logger = logging.getLogger("stunner.workers")

PUBLISH_INTERVAL = 0.1
FINAL_FLUSH_TIMEOUT = 1.0  # seconds a stopping worker waits to hand over its last counters
COUNTER_INDEXES = tuple(i for i, name in enumerate(FIELDS) if name not in GAUGES)
SERVING = FIELDS.index("serving")
RESPAWN_DELAY = (0.5, 5.0)


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process
    latest: dict[str, list[Any]] = field(default_factory=dict)
    reports: int = 0


class WorkerPool:
    """Supervises the workers and sums their counters for the supervisor's Collector."""

    def __init__(
        self, count: int, worker_args: list[str], listener_names: Callable[[], Iterable[str]]
    ) -> None:
        self.count = count
        self.worker_args = worker_args
        self.listener_names = listener_names
        self.workers: dict[int, Worker] = {}
        self.base: dict[str, list[Any]] = {}
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        live = [w for w in self.workers.values() if w.process.returncode is None]
        return len(live) == self.count and all(w.reports for w in live)

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        parent, child = socket.socketpair()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stunner.cli.stunnerd",
            *self.worker_args,
            "--worker-fd",
            str(child.fileno()),
            pass_fds=(child.fileno(),),
        )
        child.close()
        worker = Worker(index, process)
        self.workers[index] = worker
        logger.info("worker %d started (pid %d)", index, process.pid)
        task = asyncio.get_running_loop().create_task(self._supervise(worker, parent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, worker: Worker, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            while line := await reader.readline():
                try:
                    worker.latest = {k: list(v) for k, v in json.loads(line).items()}
                    worker.reports += 1
                except (ValueError, TypeError, AttributeError):
                    logger.warning("worker %d sent a bad stats line", worker.index)
        finally:
            writer.close()
        code = await worker.process.wait()
        self._fold(worker)
        if self.stopping:
            return
        logger.error(
            "worker %d (pid %d) exited with %d; restarting", worker.index, worker.process.pid, code
        )
        delay = RESPAWN_DELAY[0] if worker.reports else RESPAWN_DELAY[1]
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(worker.index)

    def _fold(self, worker: Worker) -> None:
        """Keep a dead worker's counters (not its gauges) so sums never go down."""
        for name, values in worker.latest.items():
            base = self.base.setdefault(name, list(ListenerSample()))
            for i in COUNTER_INDEXES:
                base[i] = add_values(base[i], values[i])
        worker.latest = {}

    def aggregate(self) -> Iterator[tuple[str, ListenerSample]]:
        names = list(self.listener_names())
        for stale in set(self.base) - set(names):
            del self.base[stale]
        for name in names:
            totals = list(self.base.get(name, ListenerSample()))
            for worker in self.workers.values():
                values = worker.latest.get(name)
                if values is not None:
                    totals = [add_values(a, b) for a, b in zip(totals, values, strict=True)]
            yield name, ListenerSample(*totals)

    def listener_states(self) -> Iterator[tuple[str, str | None]]:
        """Each listener, and None while every live worker serves it, else how many do not
        (stunner_listener_ready and /ready under --workers N)."""
        live = [w for w in self.workers.values() if w.process.returncode is None]
        for name in self.listener_names():
            down = sum(1 for w in live if not w.latest.get(name, ListenerSample())[SERVING])
            yield name, f"not serving in {down} of {len(live)} workers" if down else None

    def pids(self) -> list[int]:
        """The live workers' process ids, for the summed process metrics."""
        return [w.process.pid for w in self.workers.values() if w.process.returncode is None]

    def signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def stop(self, sig: int) -> None:
        """Forward the signal (SIGTERM drains, SIGINT is immediate) and wait for every worker."""
        self.stopping = True
        self.signal_all(sig)
        for worker in self.workers.values():
            await worker.process.wait()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


async def publish_stats(
    stats: Callable[[], Iterable[tuple[str, ListenerSample]]],
    fd: int,
    on_lost: Callable[[], None],
) -> None:
    """Worker side: push counter snapshots to the supervisor until cancelled.

    If the supervisor dies (even by SIGKILL) its end of the socketpair closes; the worker sees
    EOF (or a reset, if it died with our lines unread, or an error on its next write) and
    stops, so no orphan keeps the listener ports. Any way this ends but a cancel means the
    supervisor is gone.
    """
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)

    async def watch_supervisor() -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # returns b"" at EOF: the supervisor is gone

    watcher = asyncio.get_running_loop().create_task(watch_supervisor())

    def send() -> None:
        snapshot = {name: sample for name, sample in stats()}
        writer.write(json.dumps(snapshot, separators=(",", ":")).encode() + b"\n")

    try:
        while not watcher.done():
            send()
            await writer.drain()
            await asyncio.wait([watcher], timeout=PUBLISH_INTERVAL)
    except asyncio.CancelledError:
        if not watcher.done():  # the supervisor is still there: the final, exact counters
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                send()
                # Bounded: a drain on a socket whose peer just died can wait forever, and
                # the worker would never exit.
                await asyncio.wait_for(writer.drain(), FINAL_FLUSH_TIMEOUT)
        raise
    except (ConnectionError, RuntimeError):  # uvloop: RuntimeError on a closed transport
        pass
    finally:
        watcher.cancel()
        writer.close()
    logger.error("supervisor went away; worker exiting")
    on_lost()
