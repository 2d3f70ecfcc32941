"""``python -m soak --minutes N``: churn allocations on UDP, TCP and TLS for N minutes."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from soak.driver import Soak, say, summary, write

MAX_MINUTES = 240.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="duration (default 3)")
    parser.add_argument("--wave", type=int, default=8, help="allocations per listener per wave")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="logs and the JSON report")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if not 1 <= args.wave <= 200:
        parser.error("--wave must be 1-200")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="stunner-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(Soak(args.minutes, args.wave, workdir, args.seed).main())
    for text in summary(report):
        say(text)
    write(report, workdir / "soak-report.json")
    say(f"report: {workdir / 'soak-report.json'}; stunnerd log: {workdir / 'stunnerd-soak.log'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
