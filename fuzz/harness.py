"""atheris entry point: ``python -m fuzz.harness TARGET [libFuzzer flags] [CORPUS_DIR ...]``.

The stunner package is instrumented for coverage; the targets live in ``fuzz.targets``. Each
input runs on one event loop, so targets that need a running loop (TCP framing, Allocate)
behave as they do in stunnerd.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["stunner"]):
    from fuzz.targets import TARGETS, ErrorRecords, FuzzFailure


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.harness {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    name = sys.argv.pop(1)
    target = TARGETS[name]()
    errors = ErrorRecords()
    logging.getLogger("stunner").addHandler(errors)
    logging.getLogger("stunner").setLevel(logging.INFO)  # debug lines off: speed
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop_errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(str(ctx.get("message"))))

    def one_input(data: bytes) -> None:
        if target.needs_loop:
            loop.run_until_complete(target.run(data))
        else:
            target(data)
        errors.check()
        if loop_errors:
            raise FuzzFailure(f"event loop error: {loop_errors.pop()}")

    seeds_dir = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if seeds_dir is not None:
        seeds_dir.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(target.seeds()):
            (seeds_dir / f"seed-{i}").write_bytes(seed)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
