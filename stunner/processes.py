"""Process metrics of stunnerd as a whole: with ``--workers N``, the supervisor plus its workers.

prometheus_client's ProcessCollector describes one process. Under ``--workers N`` that process
is the supervisor, which only serves /metrics while the workers relay, so its CPU and memory say
nothing about the load. ``ProcessTreeCollector`` exports the same family names summed over the
supervisor and its live workers (read from /proc), plus the CPU of workers that have exited
(``RUSAGE_CHILDREN``), so ``process_cpu_seconds_total`` never goes down when a worker dies.
docs/metrics.md, "Runtime metrics", says which family is summed and which is the supervisor's.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = resource.getpagesize()


def os_threads(pid: int | str = "self") -> int:
    """OS threads of a process, as ``go_threads`` counts them (every thread, not only the
    ones the threading module started)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return threading.active_count() if pid == "self" else 0


class _Usage:
    """What /proc says about one process (zeros if it is gone)."""

    __slots__ = ("alive", "cpu", "fds", "rss", "start", "threads", "vms")

    def __init__(self, pid: int | str) -> None:
        self.alive = False
        self.cpu = self.start = 0.0
        self.vms = self.rss = self.fds = self.threads = 0
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            self.fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return
        # proc(5): utime and stime are fields 14 and 15; starttime, vsize, rss 22-24.
        self.cpu = (int(fields[11]) + int(fields[12])) / _TICKS
        self.start = int(fields[19]) / _TICKS
        self.vms = int(fields[20])
        self.rss = int(fields[21]) * _PAGE
        self.threads = os_threads(pid)
        self.alive = True


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


class ProcessTreeCollector:
    """process_* families summed over this process and ``workers()`` (their pids)."""

    def __init__(self, workers: Callable[[], Iterable[int]]) -> None:
        self._workers = workers
        self._cpu_seen = 0.0  # a counter: never report less than before
        self._boot = _boot_time()

    def collect(self) -> Iterator[Metric]:
        own = _Usage("self")
        usages = [own, *(_Usage(pid) for pid in self._workers())]
        exited = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(u.cpu for u in usages) + exited.ru_utime + exited.ru_stime
        self._cpu_seen = max(self._cpu_seen, cpu)
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds (supervisor and workers).",
            value=self._cpu_seen,
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes (supervisor and workers).",
            value=sum(u.vms for u in usages),
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory size in bytes (supervisor and workers).",
            value=sum(u.rss for u in usages),
        )
        yield GaugeMetricFamily(
            "process_open_fds",
            "Number of open file descriptors (supervisor and workers).",
            value=sum(u.fds for u in usages),
        )
        # Each process has its own limit (the workers inherit it): summed like the open fds,
        # so that open / max stays the share in use.
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors (summed over supervisor and workers).",
            value=soft * sum(1 for u in usages if u.alive),
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the supervisor since unix epoch in seconds.",
            value=self._boot + own.start,
        )
        yield GaugeMetricFamily(
            "python_threads",
            "Number of OS threads (supervisor and workers).",
            value=sum(u.threads for u in usages),
        )
