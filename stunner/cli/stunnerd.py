"""``stunnerd``: the STUNner media gateway daemon.

stunnerd -c /etc/stunnerd/stunnerd.conf -w
stunnerd turn://user:pass@127.0.0.1:3478?transport=udp
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from .. import __version__, constants
from ..config import ConfigError, StunnerConfig, from_uri, load, parse_loglevel
from ..daemon import ConfigWatcher, Stunner
from ..logs import setup_logging
from ._args import OneLineParser

logger = logging.getLogger("stunner")


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="stunnerd", description="STUNner media gateway (TURN relay).")
    parser.add_argument("uri", nargs="?", help="quick start: turn://user:pass@addr:port")
    parser.add_argument("-c", "--config", help="stunnerd config file (YAML or JSON)")
    parser.add_argument("-w", "--watch", action="store_true", help="watch the config file")
    parser.add_argument("-l", "--log", help='log levels, e.g. "all:INFO,turn:DEBUG"')
    parser.add_argument("-v", "--verbose", action="store_true", help="same as -l all:DEBUG")
    parser.add_argument("-d", "--dry-run", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--grace-period",
        type=float,
        default=constants.DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="on SIGTERM, how long to let allocations drain (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"stunnerd {__version__}")
    return parser


async def run(
    config: StunnerConfig | None, path: str | None, watch: bool, grace: float, log_fixed: bool
) -> int:
    stunner = Stunner(follow_loglevel=not log_fixed)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    graceful = True

    def on_sigterm() -> None:
        logger.info("SIGTERM: draining")
        stop.set()

    def on_sigint() -> None:
        nonlocal graceful
        logger.info("SIGINT: exiting now")
        graceful = False
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    watcher_task: asyncio.Task[None] | None = None
    if config is not None:
        await stunner.apply(config)
    if watch and path is not None:
        watcher = ConfigWatcher(path, stunner)
        if config is not None:
            watcher.read()  # remember the file as already applied
        watcher_task = asyncio.create_task(watcher.run())
    await stop.wait()
    if watcher_task is not None:
        watcher_task.cancel()
    if graceful:
        await stunner.drain(grace)
    await stunner.close()
    return 0


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.config is None) == (args.uri is None):
        parser.error("give either -c FILE or a turn:// URI")
    if args.watch and args.config is None:
        parser.error("-w needs -c FILE")
    if args.grace_period < 0:
        parser.error("--grace-period must not be negative")
    config: StunnerConfig | None = None
    try:
        if args.uri is not None:
            config = from_uri(args.uri)
        elif not args.watch:
            config = load(args.config)
        else:
            try:
                config = load(args.config)
            except ConfigError as exc:
                if args.dry_run:
                    raise
                # With -w a missing or bad file is waited for and fixed live.
                sys.stderr.write(f"stunnerd: waiting for a valid config: {exc}\n")
        log_spec = "all:DEBUG" if args.verbose else (args.log or None)
        setup_logging(log_spec or (config.admin.loglevel if config else constants.DEFAULT_LOGLEVEL))
    except ConfigError as exc:
        sys.stderr.write(f"stunnerd: error: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"stunnerd: error: cannot read {args.config}: {exc.strerror}\n")
        return 1
    if args.dry_run:
        print(f"stunnerd: config is valid ({len(config.listeners) if config else 0} listeners)")
        return 0
    try:
        return _run_loop(
            run(config, args.config, args.watch, args.grace_period, log_spec is not None)
        )
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
