"""``stunnerd``: the STUNner media gateway daemon.

stunnerd -c /etc/stunnerd/stunnerd.conf -w
stunnerd turn://user:pass@127.0.0.1:3478?transport=udp
stunnerd -c stunnerd.conf -w --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .. import __version__, constants
from ..config import ConfigError, StunnerConfig, from_uri, load
from ..daemon import Stunner
from ..gcpolicy import GcPolicy
from ..logs import setup_logging
from ..watcher import ConfigWatcher
from ..workers import WorkerPool, publish_stats
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
    parser.add_argument(
        "--workers",
        "--udp-thread-num",
        type=int,
        default=1,
        metavar="N",
        help="data-plane processes sharing each listener port (default 1)",
    )
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"stunnerd {__version__}")
    return parser


class StopSignals:
    """SIGTERM asks for a graceful drain, SIGINT for an immediate exit."""

    def __init__(self, on_immediate: Callable[[], None] = lambda: None) -> None:
        self.event = asyncio.Event()
        self.immediate = asyncio.Event()  # SIGINT, even in the middle of a drain
        self.on_immediate = on_immediate
        self.signal = signal.SIGTERM
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._stop, signal.SIGINT)

    def _stop(self, sig: signal.Signals) -> None:
        if self.event.is_set() and sig == signal.SIGTERM:
            return
        logger.info("%s: %s", sig.name, "draining" if sig == signal.SIGTERM else "exiting now")
        self.signal = sig
        self.event.set()
        if sig == signal.SIGINT:
            self.immediate.set()
            self.on_immediate()

    @property
    def graceful(self) -> bool:
        return self.signal == signal.SIGTERM


def worker_args(args: argparse.Namespace) -> list[str]:
    """The command line a worker needs: the same config, without the admin servers."""
    out = [args.uri] if args.uri else ["-c", args.config]
    if args.watch:
        out.append("-w")
    if args.log or args.verbose:
        out += ["-l", "all:DEBUG" if args.verbose else args.log]
    return [*out, "--grace-period", str(args.grace_period)]


async def run(args: argparse.Namespace, config: StunnerConfig | None, log_fixed: bool) -> int:
    stops = StopSignals()
    pool: WorkerPool | None = None
    if args.workers > 1:

        def listener_names() -> list[str]:
            return [lis.name for lis in (stunner.config.listeners if stunner.config else ())]

        pool = WorkerPool(args.workers, worker_args(args), listener_names)
        stunner = Stunner(
            follow_loglevel=not log_fixed,
            data_plane=False,
            stats_source=pool.aggregate,
            worker_pids=pool.pids,
            worker_states=pool.listener_states,
            processes=args.workers,
        )
        stunner.health.gate = lambda: pool is not None and pool.ready
        stops.on_immediate = lambda: pool.signal_all(signal.SIGINT) if pool else None
    else:
        worker = args.worker_fd is not None
        stunner = Stunner(reuse_port=worker, follow_loglevel=not log_fixed, admin=not worker)
    tasks: list[asyncio.Task[None]] = []
    if config is not None:
        await stunner.apply(config)
    elif stunner.admin:
        await stunner.serve_default_health()  # /live answers while we wait; /ready says 503
    # Long-lived objects out of the collector's reach: no pause that walks every allocation.
    gc_policy = GcPolicy()
    gc_policy.start()
    if args.watch:
        watcher = ConfigWatcher(args.config, stunner)
        if config is not None:
            watcher.prime()  # remember the file as already applied
        tasks.append(asyncio.create_task(watcher.run()))
    if pool is not None:
        await pool.start()
    publisher: asyncio.Task[None] | None = None
    if args.worker_fd is not None:
        publisher = asyncio.create_task(
            publish_stats(stunner.iter_stats, args.worker_fd, stops.event.set)
        )
    await stops.event.wait()
    for task in tasks:
        task.cancel()
    stunner.health.ready = False
    stunner.draining = stops.graceful
    if pool is not None:
        await pool.stop(stops.signal)
    elif stops.graceful:
        await stunner.drain(args.grace_period, stops.immediate)
    await stunner.close()
    gc_policy.close()
    if publisher is not None:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
    return 0


def raise_fd_limit() -> None:
    """Each allocation holds a socket: lift the soft descriptor limit to the hard one."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    config: StunnerConfig | None = None
    log_spec = "all:DEBUG" if args.verbose else args.log
    try:
        if log_spec is not None:
            setup_logging(log_spec, field="--log")
        if args.uri is not None:
            config = from_uri(args.uri)
        elif not args.watch:
            config = load(args.config)
        else:
            try:
                config = load(args.config)
            except (ConfigError, OSError) as exc:
                if args.dry_run:
                    raise
                # With -w a missing or bad file is waited for and fixed live (on Kubernetes
                # the operator may not have written the ConfigMap yet).
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                sys.stderr.write(f"stunnerd: waiting for a valid config {args.config}: {reason}\n")
        if log_spec is None:
            setup_logging(config.admin.loglevel if config else constants.DEFAULT_LOGLEVEL)
    except ConfigError as exc:
        sys.stderr.write(f"stunnerd: error: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"stunnerd: error: cannot read {args.config}: {exc.strerror}\n")
        return 1
    if args.dry_run:
        print(f"stunnerd: config is valid ({len(config.listeners) if config else 0} listeners)")
        return 0
    raise_fd_limit()
    try:
        return _run_loop(run(args, config, log_spec is not None))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
