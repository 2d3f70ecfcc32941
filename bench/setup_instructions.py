"""``python -m bench.setup_instructions``: user-space instructions per call setup, exactly.

Why: the ``calls`` section's setups per CPU-second move by +-10% on this shared machine, so a
5% change to the control path cannot be judged from it. Here stunnerd runs under valgrind's
callgrind and ``bench.driver.AllocationDriver`` makes ``--setups`` browser-like setups (401,
authenticated Allocate, CreatePermission, ChannelBind: four requests, four answers), after
``WARMUP`` setups that fill the caches a long-running server has warm. Counting starts after
them (``callgrind_control --zero``) and ends with a dump: instructions / setups. The driver's
retransmission timeout is long, so no request is sent twice however slow valgrind is.

``--profile`` runs the same workload against stunnerd under cProfile instead (no valgrind),
switched on and off around the workload by SIGUSR1/SIGUSR2, and prints the functions where
the time goes, with calls per setup; ``--lines`` counts the Python lines each function runs
per setup (exact, where cProfile's times carry its overhead per call). ``--annotate`` prints
callgrind's own top functions (C level: the interpreter, libcrypto, the kernel interface).
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .driver import AllocationDriver
from .instructions import CallgrindStunnerd
from .run import say
from .servers import Credentials, Stunnerd

HOST = "127.0.0.35"
PEER_HOST = "127.0.0.36"
PEER_PORT = 9  # never sent to: a setup only names the peer
WARMUP = 20
WINDOW = 8  # setups in flight: a wake-up may read several requests, as under load
_ROW = re.compile(r"^\s*[\d,]+ \(")  # a callgrind_annotate row: "1,234 (5.6%)  file:function"
RTO = 120.0  # seconds: under valgrind an answer can take long; never retransmit

# stunnerd with a cProfile switched on by SIGUSR1 and off (dumped to argv[1]) by SIGUSR2; run
# with ``-c`` so that it works in any tree (``--tree``), which has no bench.setup_instructions.
_PROFILED = """\
import cProfile, runpy, signal, sys
out = sys.argv.pop(1)
profile = cProfile.Profile()
def start(*_):
    profile.clear()
    profile.enable()
def stop(*_):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
sys.argv[0] = "stunnerd"
runpy.run_module("stunner.cli.stunnerd", run_name="__main__")
"""
# The same switch around a line counter (sys.settrace): Python lines executed per function,
# an exact count where cProfile's times carry its own overhead per call. Dumped as JSON.
_LINES = _PROFILED.replace(
    "profile = cProfile.Profile()",
    """import collections, json
counts = collections.Counter()
def tracer(frame, event, arg):
    if event == "line":
        counts[frame.f_code.co_filename + ":" + frame.f_code.co_name] += 1
    return tracer
class Lines:
    def clear(self):
        counts.clear()
    def enable(self):
        sys.settrace(tracer)
        frame = sys._getframe(2)
        while frame is not None:  # the frames running now trace too
            frame.f_trace = tracer
            frame = frame.f_back
    def disable(self):
        sys.settrace(None)
    def dump_stats(self, path):
        with open(path, "w") as out:
            json.dump(counts, out)
profile = Lines()""",
)


class ProfiledStunnerd(Stunnerd):
    """stunnerd under cProfile from ``start()`` (SIGUSR1) to ``stop()`` (SIGUSR2)."""

    def __init__(
        self, workdir: Path, creds: Credentials, tree: Path | None, script: str = _PROFILED
    ) -> None:
        super().__init__(workdir, HOST, creds, PEER_HOST, baseline=tree)
        self.out = workdir / "setup.profile"
        self.script = script

    def command(self) -> list[str]:
        python, _, _, *rest = super().command()  # python -m stunner.cli.stunnerd ...
        return [python, "-c", self.script, str(self.out), *[a for a in rest if a != "-w"]]

    def profile_on(self) -> None:
        self.out.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
        time.sleep(0.2)  # the handler runs at stunnerd's next Python step (its sweeper: 1 s)

    def profile_off(self) -> Path:
        self.proc.send_signal(signal.SIGUSR2)  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while not self.out.exists() or self.out.stat().st_size == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("stunnerd wrote no profile")
            time.sleep(0.1)
        time.sleep(0.2)
        return self.out


def driver_for(server: Stunnerd, creds: Credentials) -> AllocationDriver:
    """One driver for warm-up and workload: its source addresses never repeat (a repeated
    one would meet its old allocation: 437), even where another run holds some of them."""
    return AllocationDriver(
        (server.host, server.port), creds.user, creds.password, (PEER_HOST, PEER_PORT),
        create_permission=True, window=WINDOW, rto=RTO,
    )  # fmt: skip


def drive(driver: AllocationDriver, count: int) -> None:
    result = driver.drive(count, timeout=3600)
    if result.completed != count:
        raise RuntimeError(f"setups: {result.to_json()}")


def count_instructions(
    tree: Path | None, setups: int, annotate: int, keep: Path | None = None
) -> float:
    creds = Credentials()
    with tempfile.TemporaryDirectory(prefix="callgrind-setup-") as tmp:
        server = CallgrindStunnerd(Path(tmp), creds, tree, HOST, PEER_HOST)
        server.start()
        driver = driver_for(server, creds)
        try:
            drive(driver, WARMUP)
            server.control("--zero")
            started = time.monotonic()
            drive(driver, setups)
            server.control("--dump")
            say(f"{setups} setups took {time.monotonic() - started:.1f} s under valgrind")
            if annotate:
                dump = sorted(Path(tmp).glob("callgrind.out.*"))[-1]
                out = subprocess.run(
                    ["callgrind_annotate", "--inclusive=no", str(dump)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                lines = [line for line in out.stdout.splitlines() if _ROW.match(line)]
                say("\n".join(lines[1 : 1 + annotate]))  # the first row is the total
            if keep is not None:
                for dump in Path(tmp).glob("callgrind.out*"):
                    shutil.copy(dump, keep)
            return server.instructions() / setups
        finally:
            driver.close()
            server.stop()


def profiled(tree: Path | None, setups: int, script: str) -> Path:
    """Run the workload against stunnerd with ``script``'s profiler on; its dump."""
    creds = Credentials()
    keep = Path(tempfile.mkdtemp(prefix="profile-setup-"))
    server = ProfiledStunnerd(keep, creds, tree, script)
    server.start()
    driver = driver_for(server, creds)
    try:
        drive(driver, WARMUP)
        server.profile_on()
        drive(driver, setups)
        return server.profile_off()
    finally:
        driver.close()
        server.stop()


def profile(tree: Path | None, setups: int, top: int, by_calls: bool = False) -> None:
    dump = profiled(tree, setups, _PROFILED)
    raw = pstats.Stats(str(dump)).stats  # type: ignore[attr-defined]
    shutil.rmtree(dump.parent, ignore_errors=True)
    calls = sum(entry[1] for entry in raw.values())
    say(
        f"cProfile, {setups} setups, {calls / setups:,.0f} function calls per setup "
        "(tottime: the function's own time, under the profiler)"
    )
    say(f"{'calls/setup':>11} {'tottime %':>9} {'cumtime %':>9}  function")
    total = sum(entry[2] for entry in raw.values()) or 1.0
    sort = 1 if by_calls else 2  # pstats rows: (primitive calls, calls, tottime, ...)
    rows = sorted(raw.items(), key=lambda item: item[1][sort], reverse=True)[:top]
    for (path, line, name), (_, calls, tottime, cumtime, _) in rows:
        where = f"{Path(path).name}:{line}" if line else path
        say(
            f"{calls / setups:11.2f} {100 * tottime / total:8.1f}% "
            f"{100 * cumtime / total:8.1f}%  {name} ({where})"
        )


def lines(tree: Path | None, setups: int, top: int) -> None:
    dump = profiled(tree, setups, _LINES)
    counts: dict[str, int] = json.loads(dump.read_text())
    shutil.rmtree(dump.parent, ignore_errors=True)
    say(f"{sum(counts.values()) / setups:,.0f} Python lines executed per setup ({setups} setups)")
    for where, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
        path, _, name = where.rpartition(":")
        say(f"{count / setups:8.1f}  {name} ({'/'.join(Path(path).parts[-2:])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="another tree's stunner (git archive)")
    parser.add_argument("--setups", type=int, default=200)
    parser.add_argument("--annotate", type=int, default=0, help="print callgrind's top N")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps to this directory")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile: print the top N functions"
    )
    parser.add_argument("--by-calls", action="store_true", help="--profile: sort by calls")
    parser.add_argument(
        "--lines", type=int, default=0, metavar="N", help="Python lines run: the top N functions"
    )
    args = parser.parse_args()
    if args.lines:
        lines(args.tree, args.setups, args.lines)
        return
    if args.profile:
        profile(args.tree, args.setups, args.profile, args.by_calls)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench.setup_instructions: valgrind (callgrind) is not installed")
    per = count_instructions(args.tree, args.setups, args.annotate, args.keep)
    say(
        f"{per:,.0f} instructions per call setup (401, Allocate, CreatePermission, "
        f"ChannelBind; {args.setups} setups, {WINDOW} in flight, tree {args.tree or 'this one'})"
    )


if __name__ == "__main__":
    main()
