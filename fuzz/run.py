"""Bounded fuzz campaign: each target for at most ``--runs`` inputs and ``--seconds`` seconds.

    python -m fuzz.run [--runs N] [--seconds S] [--targets datagram,stream,signed] [--workdir D]

Corpora persist in ``WORKDIR/corpus/TARGET`` (default: a temporary directory), so repeated runs
with the same ``--workdir`` build on each other. A crash leaves ``WORKDIR/crash-*`` with the
reproducer bytes, printed here in hex; replay one with
``python -m fuzz.harness TARGET WORKDIR/crash-...``. Exit status 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

TARGETS = ("datagram", "stream", "signed")
DONE = re.compile(r"Done (\d+) runs in (\d+) second")
STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
CRASH_FILE = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    target: str
    runs: int = 0
    seconds: float = 0.0
    coverage: int = 0
    features: int = 0
    corpus: int = 0
    crashes: list[str] = field(default_factory=list)  # reproducers, hex
    exit_code: int = 0

    def line(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        return (
            f"{self.target:9} {self.runs:>10} inputs {self.seconds:7.1f} s {rate:>9.0f}/s "
            f"cov {self.coverage:>4} ft {self.features:>5} corpus {self.corpus:>5} "
            f"crashes {len(self.crashes)}"
        )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_target(target: str, runs: int, seconds: int, workdir: Path) -> Result:
    corpus = workdir / "corpus" / target
    argv = [
        sys.executable,
        "-m",
        "fuzz.harness",
        target,
        f"-runs={runs}",
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={workdir}/{target}-",
        str(corpus),
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, check=False)
    result = Result(target, seconds=time.monotonic() - started, exit_code=proc.returncode)
    output = proc.stdout + proc.stderr
    (workdir / f"{target}.log").write_text(output)
    if done := DONE.search(output):
        result.runs = int(done.group(1))
    statuses = STATUS.findall(output)
    if statuses:
        last = statuses[-1]
        result.runs = max(result.runs, int(last[0]))
        result.coverage, result.features, result.corpus = map(int, last[1:])
    for path in CRASH_FILE.findall(output):
        result.crashes.append(Path(path).read_bytes().hex())
    if proc.returncode != 0 and not result.crashes:
        result.crashes.append(f"exit {proc.returncode}: see {workdir / target}.log")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seconds", type=int, default=480, help="time cap per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stunner-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for target in targets:
        result = run_target(target, args.runs, args.seconds, workdir)
        say(result.line())
        for crash in result.crashes:
            say(f"  reproducer ({target}): {crash}")
        results.append(result)
    total = sum(r.runs for r in results)
    crashes = sum(len(r.crashes) for r in results)
    say(f"total     {total:>10} inputs, {crashes} crash(es); logs and corpora in {workdir}")
    (workdir / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
