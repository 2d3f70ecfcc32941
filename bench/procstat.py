"""CPU time and memory of a server process tree, read from /proc.

CPU is user + system time (``/proc/PID/stat`` fields 14 and 15, in clock ticks), so a rate per
CPU-second does not depend on how busy the rest of the machine is. With worker processes the
whole tree counts: the parent and every live descendant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the bench uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int  # clock ticks
    stime: int  # clock ticks

    @property
    def ticks(self) -> int:
        return self.utime + self.stime


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line; ``comm`` may hold spaces and parentheses."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        raise ValueError("no ')' closing the comm field")
    pid_text, _, comm = head.partition(" (")
    fields = tail.split()
    if len(fields) < 13:
        raise ValueError(f"only {len(fields) + 2} fields in /proc stat line")
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return ProcStat(
        pid=int(pid_text),
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
    )


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The stat of ``pid``, or None if it has gone."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def all_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                out[stat.pid] = stat
    return out


def tree(pid: int, stats: dict[int, ProcStat]) -> list[int]:
    """``pid`` and its live descendants, parents first."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: list[int] = []
    todo = [pid] if pid in stats else []
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(sorted(children.get(current, [])))
    return found


def cpu_split(pid: int, with_children: bool = False, proc: Path = PROC) -> tuple[int, int]:
    """(utime, stime) ticks of ``pid`` (all its threads), plus its live descendants if asked."""
    if with_children:
        all_ = all_stats(proc)
        stats = [all_[p] for p in tree(pid, all_)]
    else:
        stat = read_stat(pid, proc)
        stats = [stat] if stat is not None else []
    return sum(s.utime for s in stats), sum(s.stime for s in stats)


def cpu_ticks(pid: int, with_children: bool = False, proc: Path = PROC) -> int:
    return sum(cpu_split(pid, with_children, proc))


def cpu_times(pid: int, with_children: bool = False, proc: Path = PROC) -> tuple[float, float]:
    """(user, system) CPU seconds; see ``cpu_split``."""
    user, system = cpu_split(pid, with_children, proc)
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int, with_children: bool = False, proc: Path = PROC) -> float:
    return cpu_ticks(pid, with_children, proc) / CLK_TCK


def parse_rss_kib(status_text: str) -> int:
    """VmRSS from ``/proc/PID/status``, in KiB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value)
    raise ValueError("no VmRSS line (a kernel thread or a zombie?)")


def rss_bytes(pid: int, with_children: bool = False, proc: Path = PROC) -> int:
    """Resident set size of ``pid`` (and its descendants if asked), in bytes."""
    pids = tree(pid, all_stats(proc)) if with_children else [pid]
    return sum(parse_rss_kib((proc / str(p) / "status").read_text()) * 1024 for p in pids)


def parse_cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` in /proc/cpuinfo (x86), else ``Hardware``/``cpu model``."""
    for key in ("model name", "Hardware", "cpu model", "Processor"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return "unknown"


def parse_udp_snmp(text: str) -> dict[str, int]:
    """The ``Udp:`` counters of /proc/net/snmp (a header line, then a value line)."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        raise ValueError("no Udp: lines in /proc/net/snmp")
    return dict(zip(rows[0], (int(v) for v in rows[1]), strict=True))


def udp_counters(proc: Path = PROC) -> dict[str, int]:
    """This network namespace's UDP counters: drops anywhere in it, not per process."""
    return parse_udp_snmp((proc / "net" / "snmp").read_text())
