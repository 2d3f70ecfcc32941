"""Profilers attached to stunnerd during a load, and text summaries of where the time went.

``py-spy record --native`` samples Python and C frames (uvloop, the socket module) and shows
the call paths; ``summarize`` reads its raw (collapsed) output, one line per distinct stack,
``frame;frame;...;leaf COUNT``. py-spy does not see inside the kernel and its busy/idle split
is coarse, so when ``perf`` is installed the bench also runs ``perf record -e cpu-clock``, which
attributes CPU time to the kernel, libpython, uvloop and libc exactly.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from . import child

RATE = 1000  # samples per second (py-spy pauses stunnerd briefly for each)
IDLE_LEAVES = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2", "select", "poll", "ppoll"})
_LINE = re.compile(r":\d+\)$")
_PERF_ROW = re.compile(r"^\s+([\d.]+)%\s+(\S.*)$")


def pyspy_binary() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def pyspy_version() -> str:
    binary = pyspy_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().removeprefix("py-spy ").strip() or "unknown"


class Recorder:
    """A profiler attached to a PID from ``start()`` until ``stop()`` (SIGINT: it writes out)."""

    def __init__(self, argv: list[str], output: Path) -> None:
        self.argv = argv
        self.output = output
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = output.with_suffix(output.suffix + ".log")

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            child.stop(proc, signal.SIGINT, timeout=60)


class PySpy(Recorder):
    """``py-spy record --native`` in one of its formats (raw, flamegraph, speedscope)."""

    def __init__(self, pid: int, output: Path, fmt: str) -> None:
        binary = pyspy_binary()
        if binary is None:
            raise FileNotFoundError("py-spy")
        argv = [binary, "record", "--pid", str(pid), "--rate", str(RATE), "--native"]
        super().__init__([*argv, "--format", fmt, "--output", str(output)], output)


class Perf(Recorder):
    """``perf record -e cpu-clock`` on a PID: CPU time by binary and symbol, kernel included."""

    def __init__(self, pid: int, output: Path) -> None:
        binary = shutil.which("perf")
        if binary is None:
            raise FileNotFoundError("perf")
        argv = [binary, "record", "-e", "cpu-clock", "-F", str(RATE), "-p", str(pid)]
        super().__init__([*argv, "-o", str(output)], output)

    def report(self, sort: str, top: int = 15) -> list[dict[str, Any]]:
        """``perf report --sort SORT``: the top entries and their share of CPU samples."""
        argv = ["perf", "report", "-i", str(self.output), "--no-children", "--sort", sort]
        out = subprocess.run(
            [*argv, "--stdio", "-g", "none"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return parse_perf_report(out.stdout)[:top]


def parse_perf_report(text: str) -> list[dict[str, Any]]:
    """Rows ``  72.29%  [kernel.kallsyms]`` (or ``  5.62%  [k] symbol``) of ``perf report``."""
    rows = []
    for line in text.splitlines():
        match = _PERF_ROW.match(line)
        if match:
            rows.append({"function": match.group(2).strip(), "pct": float(match.group(1))})
    return rows


def frame_name(frame: str) -> str:
    """``func (file.py:12)`` -> ``func (file.py)``: lines of one function add up."""
    return _LINE.sub(")", frame.strip())


def category(leaf: str) -> str:
    """Where a sample's CPU time was spent, by the file of its innermost frame."""
    where = leaf.rpartition(" (")[2].rstrip(")")
    if where.startswith("libc"):
        return "system calls (libc: sendmsg, recvmsg, ...)"
    if where.startswith("stunner/"):
        return "stunner Python code"
    if where.endswith(".py") or where.startswith("<"):
        return "other Python code (asyncio, uvloop, stdlib)"
    return "native code (uvloop/libuv, CPython, extensions)"


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Busy samples, by category and by function (self and inclusive).

    Samples whose innermost frame waits for events (``epoll_pwait`` ...) are idle and left out.
    Frames on (nearly) every stack, the event loop's own call chain, are left out of the
    inclusive list, where they would only say 100%.
    """
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames[-1].partition(" (")[0] in IDLE_LEAVES:
            idle += count
            continue
        total += count
        self_samples[frames[-1]] += count
        categories[category(frames[-1])] += count
        for name in set(frames):
            inclusive[name] += count

    def rows(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "pct": round(100.0 * n / total, 1)}
            for name, n in counter.most_common(limit)
        ]

    chain = {name for name, n in inclusive.items() if n >= 0.99 * total}
    return {
        "samples": total,
        "idle_samples": idle,
        "categories": rows(categories, top),
        "self": rows(self_samples, top),
        "inclusive": rows(Counter({k: v for k, v in inclusive.items() if k not in chain}), top),
    }
