"""Pin a process tree to a set of CPUs, so a server and its load generator never share a core.

``taskset -p`` and ``os.sched_setaffinity(pid)`` both change one thread; a server's other
threads (coturn's relay and listener threads) and its worker processes must be pinned too, so
this walks ``/proc/PID/task`` of every process in the tree. Threads started later inherit the
mask of the thread that starts them.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import procstat


def cores() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def split(available: list[int], server_cores: int) -> tuple[set[int], set[int]]:
    """(server CPUs, load CPUs): the first ``server_cores`` CPUs for the server, the rest for
    the load; if nothing is left, the load shares the server's CPUs."""
    server = set(available[:server_cores])
    rest = set(available[server_cores:])
    return server, rest or server


def tasks(pid: int, proc: Path = procstat.PROC) -> list[int]:
    """Every thread of ``pid``."""
    try:
        return sorted(int(t.name) for t in (proc / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return []


def pin_tree(pid: int, cpus: set[int]) -> int:
    """Pin every thread of ``pid`` and of its live descendants to ``cpus``; returns how many."""
    pinned = 0
    for member in procstat.tree(pid, procstat.all_stats()):
        for tid in tasks(member):
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, PermissionError):
                continue
            pinned += 1
    return pinned


def pin_self(cpus: set[int]) -> set[int]:
    """Pin the calling thread (children started after it inherit); returns the old mask."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    return old
