"""``python -m bench.run``: stunnerd against coturn, the cost of monitoring, memory, workers.

pion/turn (``bench/pion``, built from Debian's Go packages) runs beside coturn in the
throughput, memory and profile sections when Go is installed; without it, one line says so.
Sections (``--only`` picks some): ``throughput`` (datagrams per server CPU-second, all
servers, 100 B and 1000 B, 1/10/100 allocations), ``allocations`` and ``memory`` (one
section: allocation rate, RSS per idle allocation, scrape time at 1,000 and 10,000
allocations), ``monitoring`` (metrics off vs on with a real Prometheus), ``saturation``
(each server's knee on one core, and overload, in rounds: ``--saturation-rounds``),
``workers`` (the knee of ``stunnerd --workers N``), ``calls`` (call setup rate and latency,
added latency), ``profile`` (py-spy; ``--profile`` runs only this one).
Results go to ``bench-results/bench.json`` (``profile.json``); a full run also rewrites
``docs/performance.md``. Everything runs on 127.0.0.0/8 and is torn down in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import stunner
from testkit.echo import EchoProcess

from . import callsetup, procstat, report, saturation, streams
from .driver import AllocationDriver, raise_nofile
from .load import LoadResult, LoadSpec, run_load
from .pionbuild import Build, ensure_built, go_version, pion_version
from .pionserver import GOMAXPROCS, Pion
from .profile import RATE, Perf, PySpy, pyspy_version, summarize
from .prom import Prometheus, prometheus_binary, prometheus_version
from .servers import (
    REPO,
    Coturn,
    Credentials,
    ServerProcess,
    Stunnerd,
    coturn_binary,
    coturn_version,
    udp_buffers,
)
from .streams import TLS_INTERVAL_MS

STUNNERD_HOST = "127.0.0.11"
COTURN_HOST = "127.0.0.12"
PEER_HOST = "127.0.0.13"
BASELINE_HOST = "127.0.0.14"
PION_HOST = "127.0.0.15"
SECTIONS = (
    "throughput", "memory", "monitoring", "saturation", "workers", "calls", "profile",
)  # fmt: skip
DEFAULT_SECTIONS = SECTIONS[:-1]
NOFILE_WANTED = 65536
SCRAPES = 20  # timed scrapes per memory level
SCRAPE_CPU_COUNT = 50  # back-to-back scrapes to measure stunnerd's CPU per scrape
WARMUP_ALLOCATIONS = 10


@dataclass(frozen=True)
class Plan:
    """How much of each section to run."""

    repeats: int
    loads: tuple[LoadSpec, ...]
    monitoring_pairs: int
    monitoring_load: LoadSpec
    memory_levels: tuple[int, ...]
    profile_load: LoadSpec


def _loads(sizes: tuple[int, ...], one: int, ten: int, hundred: int) -> tuple[LoadSpec, ...]:
    return tuple(
        spec
        for size in sizes
        for spec in (
            LoadSpec(1, size, one),
            LoadSpec(10, size, ten),
            LoadSpec(100, size, hundred, 1),
        )
    )


def _stream_loads(
    sizes: tuple[int, ...], tcp_one: int, tcp_ten: int, tls_ten: int
) -> tuple[LoadSpec, ...]:
    """TCP and TLS client legs (bench.streams says why TLS is paced)."""
    return tuple(
        spec
        for size in sizes
        for spec in (
            LoadSpec(1, size, tcp_one, transport="tcp"),
            *([LoadSpec(10, size, tcp_ten, transport="tcp")] if tcp_ten else []),
            LoadSpec(10, size, tls_ten, TLS_INTERVAL_MS, transport="tls"),
        )
    )


FULL = Plan(
    repeats=2,
    loads=_loads((100, 1000), 50_000, 15_000, 4_000)
    + _stream_loads((100, 1000), 30_000, 6_000, 1_500),
    monitoring_pairs=3,
    monitoring_load=LoadSpec(1, 100, 80_000),
    memory_levels=(1_000, 10_000),
    profile_load=LoadSpec(1, 100, 100_000),
)
QUICK = Plan(
    repeats=1,
    loads=_loads((100,), 20_000, 5_000, 1_500) + _stream_loads((100,), 15_000, 0, 1_000),
    monitoring_pairs=1,
    monitoring_load=LoadSpec(1, 100, 20_000),
    memory_levels=(1_000, 10_000),
    profile_load=LoadSpec(1, 100, 30_000),
)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def describe(spec: LoadSpec) -> str:
    leg = "" if spec.transport == "udp" else f"{spec.transport.upper()} client, "
    return (
        f"{leg}{spec.size} B, {spec.allocations} allocation(s), {spec.messages} messages each, "
        f"-z {spec.interval_ms}"
    )


class Bench:
    """One bench run: shared peer, credentials, work dir, and the JSON being built."""

    def __init__(self, plan: Plan, workdir: Path, out: Path, baseline: Path | None = None) -> None:
        self.plan = plan
        self.baseline = baseline
        self.workdir = workdir
        self.out = out
        self.creds = Credentials()
        self.data: dict[str, Any] = {"notes": [], "commands": {}}
        self._dirs = 0
        self._client_hosts = 0
        self._pion: Build | None = None
        self.pion_gomaxprocs = GOMAXPROCS
        self.saturation_rounds: int | None = None  # None: the saturation plan's

    # helpers

    def fresh_dir(self, name: str) -> Path:
        self._dirs += 1
        path = self.workdir / f"{self._dirs:02d}-{name}"
        path.mkdir()
        return path

    def note(self, text: str) -> None:
        if text not in self.data["notes"]:
            self.data["notes"].append(text)
            say(f"note: {text}")

    def command(self, name: str, argv: list[str]) -> None:
        self.data["commands"].setdefault(name, shlex.join(argv))

    def client_host(self) -> str:
        """A new uclient source address per run, so no 5-tuple meets a leftover allocation."""
        self._client_hosts += 1
        return f"127.0.2.{1 + self._client_hosts % 250}"

    def load(
        self, server: ServerProcess, echo: EchoProcess, spec: LoadSpec, **hooks: Any
    ) -> LoadResult:
        t0 = time.monotonic()
        result = run_load(
            server, (self.creds.user, self.creds.password), echo, spec,
            local_host=self.client_host(), **hooks,
        )  # fmt: skip
        self.spent(server.name, time.monotonic() - t0)
        leg = "" if spec.transport == "udp" else f", {spec.transport.upper()}"
        self.command(f"uclient ({spec.allocations} allocations{leg})", result.argv)
        status = "ok" if result.ok else f"FAILED: {result.error}"
        say(
            f"  {server.name:8s} {describe(spec)}: {result.per_cpu_s:,.0f} datagrams/CPU-s, "
            f"{result.per_wall_s:,.0f}/s, loss {result.loss_pct:.1f}%, "
            f"CPU {100 * result.cpu_util:.0f}% [{status}]"
        )
        return result

    @contextlib.contextmanager
    def stunnerd(self, **kwargs: Any) -> Iterator[Stunnerd]:
        server = Stunnerd(
            self.fresh_dir("stunnerd"), STUNNERD_HOST, self.creds, PEER_HOST, **kwargs
        )
        try:
            server.start()
            self.command("stunnerd", server.argv)
            yield server
        finally:
            server.stop()

    @contextlib.contextmanager
    def coturn(self) -> Iterator[Coturn | None]:
        if coturn_binary() is None:
            self.note("coturn's turnserver is not installed (apt-get install coturn): no baseline")
            yield None
            return
        server = Coturn(self.fresh_dir("coturn"), COTURN_HOST, self.creds)
        try:
            server.start()
            self.command("coturn", server.argv)
            yield server
        finally:
            server.stop()

    def spent(self, server: str, seconds: float) -> None:
        """Add to the wall time one server cost this run (its loads, start, memory section)."""
        spent = self.data.setdefault("wall_s", {})
        spent[server] = round(spent.get(server, 0.0) + seconds, 1)

    @contextlib.contextmanager
    def pion(self) -> Iterator[Pion | None]:
        """pion/turn (bench/pion, built on first use), or None with a note saying why not."""
        t0 = time.monotonic()
        if self._pion is None:
            self._pion = ensure_built(self.out / "pion", say=say)
            self.data["pion"] = {
                "binary": self._pion.binary and self._pion.binary.name,
                "built_s": round(time.monotonic() - t0, 1) if self._pion.built else None,
                "skipped": self._pion.skipped,
            }
        if self._pion.binary is None:
            self.note(self._pion.skipped)
            yield None
            return
        server = Pion(
            self.fresh_dir("pion"), PION_HOST, self.creds, self._pion.binary,
            gomaxprocs=self.pion_gomaxprocs,
        )  # fmt: skip
        self.data["pion"]["gomaxprocs"] = server.gomaxprocs
        try:
            server.start()
            self.command("pion", server.argv)
            self.spent("pion", time.monotonic() - t0)
            yield server
        finally:
            t0 = time.monotonic()
            server.stop()
            self.spent("pion", time.monotonic() - t0)

    def buffers(self, servers: list[ServerProcess]) -> None:
        """Note each server's listener socket buffers once: they explain much of the loss."""
        found = self.data.setdefault("listener_buffers", {})
        for server in servers:
            sizes = udp_buffers(server.host, server.port)
            if sizes is not None and server.name not in found:
                found[server.name] = {"rcvbuf": sizes[0], "sndbuf": sizes[1]}
        named = [name for name in report.SERVERS if name in found]
        if all(s.name in found for s in servers if s.name in report.SERVERS):
            self.note(
                "listener socket buffers (ss -m): "
                + ", ".join(
                    f"{name} SO_RCVBUF {found[name]['rcvbuf']:,} B, SO_SNDBUF "
                    f"{found[name]['sndbuf']:,} B"
                    for name in named
                )
                + "; uclient sends in bursts (50 messages per client per tick), so compare "
                "lost with UDP RcvbufErrors in the spread table"
            )

    @contextlib.contextmanager
    def baseline_stunnerd(self) -> Iterator[Stunnerd | None]:
        if self.baseline is None:
            yield None
            return
        server = Stunnerd(
            self.fresh_dir("baseline"), BASELINE_HOST, self.creds, PEER_HOST,
            baseline=self.baseline,
        )  # fmt: skip
        try:
            server.start()
            yield server
        finally:
            server.stop()

    # sections

    def throughput(self, echo: EchoProcess) -> None:
        say("== throughput: relayed datagrams per server CPU-second")
        runs: list[dict[str, Any]] = []
        seconds: dict[str, float] = {}  # wall time per client transport, servers' starts included
        for spec in self.plan.loads:
            t0 = time.monotonic()
            with (
                self.stunnerd() as stunnerd,
                self.coturn() as coturn,
                self.pion() as pion,
                self.baseline_stunnerd() as baseline,
            ):
                servers: list[ServerProcess] = [
                    stunnerd,
                    *([coturn] if coturn else []),
                    *([pion] if pion else []),
                    *([baseline] if baseline else []),
                ]
                self.buffers(servers)
                for repeat in range(self.plan.repeats):
                    order = servers if repeat % 2 == 0 else servers[::-1]
                    for server in order:
                        result = self.load(server, echo, spec)
                        runs.append({**result.to_json(), "repeat": repeat})
            seconds[spec.transport] = seconds.get(spec.transport, 0.0) + time.monotonic() - t0
        self.data["throughput"] = {"repeats": self.plan.repeats, "runs": runs}
        self.data["throughput"]["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        say("   (" + ", ".join(f"{k}: {v:.0f} s" for k, v in seconds.items()) + ")")

    def memory(self, echo: EchoProcess) -> None:
        say("== allocations, memory and scrape time")
        levels = self._memory_levels()
        self.data["memory"] = {}
        self.data["allocation_rate"] = {}
        with self.stunnerd(metrics=True) as stunnerd:
            self._memory_of(stunnerd, echo, levels, stunnerd.metrics_url)
        with self.coturn() as coturn:
            if coturn is not None:
                self._memory_of(coturn, echo, levels, None)
        with self.pion() as pion:
            if pion is not None:
                t0 = time.monotonic()
                self._memory_of(pion, echo, levels, None)
                self.spent("pion", time.monotonic() - t0)

    def _memory_levels(self) -> tuple[int, ...]:
        limit = raise_nofile(NOFILE_WANTED)
        usable = limit - 500 - WARMUP_ALLOCATIONS
        levels = tuple(min(level, usable) for level in self.plan.memory_levels)
        if levels != self.plan.memory_levels:
            self.note(
                f"RLIMIT_NOFILE is {limit} and cannot be raised here, so the memory levels are "
                f"{levels} instead of {self.plan.memory_levels}"
            )
        return levels

    def _memory_of(
        self, server: ServerProcess, echo: EchoProcess, levels: tuple[int, ...], metrics: str | None
    ) -> None:
        driver = AllocationDriver(
            (server.host, server.port), self.creds.user, self.creds.password, echo.address
        )
        rows: list[dict[str, Any]] = []
        try:
            warm = driver.drive(WARMUP_ALLOCATIONS)
            if warm.failed:
                raise RuntimeError(f"{server.name}: warm-up allocations failed: {warm.errors}")
            base = settled_rss(server)
            made = 0
            for level in levels:
                cpu0 = server.cpu_seconds()
                result = driver.drive(level - made)
                result.server_cpu_s = server.cpu_seconds() - cpu0
                made += result.completed
                if not self.data["allocation_rate"].get(server.name):
                    self.data["allocation_rate"][server.name] = result.to_json()
                say(
                    f"  {server.name:8s} +{result.completed} allocations: "
                    f"{result.per_cpu_s:,.0f}/CPU-s ({result.failed} failed)"
                )
                rss = settled_rss(server)
                row: dict[str, Any] = {
                    "allocations": made,
                    "rss_base_bytes": base,
                    "rss_bytes": rss,
                    "per_alloc_bytes": round((rss - base) / made, 1) if made else None,
                    "idle_cpu_pct": round(100 * idle_cpu(server, 2.0), 3),
                    "failed": result.failed,
                }
                if metrics:
                    times, size = time_scrapes(metrics, SCRAPES)
                    row.update(
                        scrape_ms_median=round(statistics.median(times), 2),
                        scrape_ms_max=round(max(times), 2),
                        scrape_bytes=size,
                    )
                say(
                    f"  {server.name:8s} {made} allocations: RSS/alloc "
                    f"{report.fmt_kib(row['per_alloc_bytes'])}, "
                    f"scrape {report.fmt_ms(row.get('scrape_ms_median'))}"
                )
                rows.append(row)
        finally:
            driver.close()
        self.data["memory"][server.name] = rows

    def monitoring(self, echo: EchoProcess) -> None:
        say("== cost of monitoring: metrics off vs on, Prometheus scraping every 1 s")
        mon: dict[str, Any] = {"load": describe(self.plan.monitoring_load), "runs": []}
        self.data["monitoring"] = mon
        if prometheus_binary() is None:
            mon["skipped"] = "prometheus is not installed (apt-get install prometheus)"
            self.note(mon["skipped"])
            return
        with self.stunnerd(metrics=True) as stunnerd:
            target = f"{stunnerd.host}:{stunnerd.metrics_port}"
            with Prometheus(self.fresh_dir("prometheus"), target) as prom:
                self.command("prometheus", prom.argv)
                prom.wait_up()
                pattern = [False, True] * self.plan.monitoring_pairs
                for i, on in enumerate(pattern):
                    if i % 4 in (2, 3):
                        on = not on  # off,on,on,off,...: drift cancels out
                    stunnerd.set_metrics(on)
                    start = time.time()
                    result = self.load(stunnerd, echo, self.plan.monitoring_load)
                    run = {"metrics": on, **result.to_json()}
                    if on:
                        run["scrapes"] = prom.successful_scrapes(start, time.time())
                    mon["runs"].append(run)
            stunnerd.set_metrics(True)
            mon["scrape_cpu_ms"], mon["scrape_bytes"] = scrape_cpu_ms(stunnerd)
        mon["scrape_core_pct"] = round(mon["scrape_cpu_ms"] / 10, 3)  # 1 scrape/s of 1000 ms
        mon.update(monitoring_cost(mon["runs"], mon["scrape_cpu_ms"] / 1000))

    def profile(self, echo: EchoProcess) -> dict[str, Any]:
        say("== profile: py-spy (and perf) on stunnerd, 100 B, 1 allocation")
        spec = self.plan.profile_load
        outputs = {
            "raw": self.out / "profile.txt",
            "flamegraph": self.out / "profile.svg",
            "speedscope": self.out / "profile.speedscope.json",
        }
        profile: dict[str, Any] = {"load": describe(spec), "rate": RATE, "files": {}}
        profile["commands"] = self.data["commands"]  # filled in as the profilers start
        with self.stunnerd() as stunnerd:
            for fmt, path in outputs.items():
                spy = PySpy(stunnerd.pid, path, fmt)
                self.command(f"py-spy ({fmt})", spy.argv)
                try:
                    self.load(stunnerd, echo, spec, on_traffic=spy.start, on_quiet=spy.stop)
                finally:
                    spy.stop()
                profile["files"][fmt] = str(
                    path.relative_to(REPO) if path.is_relative_to(REPO) else path
                )
            profile["summary"] = summarize(outputs["raw"].read_text())
            profile["perf"] = {"stunnerd": self.perf_profile(stunnerd, echo, spec)}
        with self.coturn() as coturn:
            if coturn is not None:
                profile["perf"]["coturn"] = self.perf_profile(coturn, echo, spec)
        with self.pion() as pion:
            if pion is not None:
                profile["perf"]["pion"] = self.perf_profile(pion, echo, spec)
        profile["transports"] = streams.profile(self, echo)
        return profile

    def perf_profile(
        self, server: ServerProcess, echo: EchoProcess, spec: LoadSpec
    ) -> dict[str, Any]:
        """CPU by binary and by symbol (kernel included) from ``perf``, if it is installed."""
        if shutil.which("perf") is None:
            self.note("perf is not installed (apt-get install linux-perf): no kernel profile")
            return {}
        perf = Perf(server.pid, self.workdir / f"perf-{server.name}.data")
        self.command("perf", perf.argv)
        try:
            result = self.load(server, echo, spec, on_traffic=perf.start, on_quiet=perf.stop)
        finally:
            perf.stop()
        return {
            "per_cpu_s": round(result.per_cpu_s, 1),
            "dso": perf.report("dso", 8),
            "symbols": perf.report("sym", 20),
        }


def monitoring_cost(runs: list[dict[str, Any]], scrape_cpu_s: float) -> dict[str, Any]:
    """The A/B cost (1 - on/off per CPU-second), its noise, and a direct estimate.

    noise: two standard errors of the difference of the mean per-run rates, relative to the
    off mean (None with fewer than two runs a side); an A/B cost inside it is not resolved.
    direct: the CPU one scrape a second adds, over the CPU the relay used per second in the
    metrics-on runs.
    """
    off = report.aggregate(r for r in runs if not r["metrics"])
    on = report.aggregate(r for r in runs if r["metrics"])
    if not off or not on:
        return {}
    rates = [[r["per_cpu_s"] for r in runs if r.get("ok") and r["metrics"] == m] for m in (0, 1)]
    noise = None
    if min(len(side) for side in rates) >= 2:
        error = sum(statistics.variance(side) / len(side) for side in rates) ** 0.5
        noise = round(100 * 2 * error / statistics.mean(rates[0]), 3)
    return {
        "off_per_cpu_s": off["per_cpu_s"],
        "on_per_cpu_s": on["per_cpu_s"],
        "cost_pct": round(100 * (1 - on["per_cpu_s"] / off["per_cpu_s"]), 3),
        "noise_pct": noise,
        "direct_pct": round(100 * scrape_cpu_s / (on["cpu_util"] + scrape_cpu_s), 3),
    }


# measurements that are not loads


def settled_rss(server: ServerProcess, timeout: float = 5.0) -> int:
    """RSS once it stops moving (two reads 0.3 s apart within 0.5%), or after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = server.rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.rss_bytes()
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


def idle_cpu(server: ServerProcess, seconds: float) -> float:
    """The server's CPU use (fraction of one core) over ``seconds`` without traffic."""
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


def time_scrapes(url: str, count: int) -> tuple[list[float], int]:
    """Wall time (ms) of ``count`` GETs of ``url``, and the size of the last body."""
    times, size = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        size = len(get(url))
        times.append(1000 * (time.perf_counter() - t0))
    return times, size


def scrape_cpu_ms(stunnerd: Stunnerd) -> tuple[float, int]:
    """stunnerd's CPU time per /metrics scrape, from ``SCRAPE_CPU_COUNT`` back-to-back scrapes."""
    get(stunnerd.metrics_url)
    cpu0 = stunnerd.cpu_seconds()
    _, size = time_scrapes(stunnerd.metrics_url, SCRAPE_CPU_COUNT)
    return round(1000 * (stunnerd.cpu_seconds() - cpu0) / SCRAPE_CPU_COUNT, 3), size


def machine() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": procstat.parse_cpu_model(Path("/proc/cpuinfo").read_text()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": version("uvloop"),
        "coturn": coturn_version(),
        "pion": pion_version(),
        "go": go_version(go) if (go := shutil.which("go")) else "not installed",
        "prometheus": prometheus_version(),
        "py_spy": pyspy_version(),
        "stunner": stunner.__version__,
        "rlimit_nofile": raise_nofile(NOFILE_WANTED),
    }


def standing_notes(bench: Bench) -> None:
    bench.note(
        "uclient -m N holds 2N allocations: per client a probe allocation it never frees and "
        "the one it sends on; only the N send"
    )
    bench.note(
        f"{os.cpu_count()} cores are shared by the server, uclient, the echo peer and the "
        "bench, so wall-clock rates and loss are those of a crowded machine; per CPU-second "
        "rates are the comparison"
    )


def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    sections = set(args.only.split(",")) if args.only else set(DEFAULT_SECTIONS)
    if args.profile:
        sections = {"profile"}
    unknown = sections - set(SECTIONS)
    if unknown:
        say(f"unknown section(s): {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    raise_nofile(NOFILE_WANTED)  # before any child starts: they inherit it
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stunner-bench-") as tmp:
        baseline = None
        if args.baseline:
            try:
                baseline, commit = export_tree(args.baseline, Path(tmp) / "baseline")
            except (OSError, subprocess.CalledProcessError) as exc:
                say(f"--baseline {args.baseline}: cannot export that tree from git: {exc}")
                return 2
        bench = Bench(plan, Path(tmp), out, baseline)
        bench.pion_gomaxprocs = args.pion_gomaxprocs
        bench.saturation_rounds = args.saturation_rounds
        if args.baseline:
            bench.data["baseline"] = {"ref": args.baseline, "commit": commit}
        bench.data.update(
            schema=1,
            mode="quick" if args.quick else "full",
            sections=sorted(sections),
            started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine(),
        )
        standing_notes(bench)
        steps: list[tuple[str, Callable[[EchoProcess], Any]]] = [
            ("throughput", bench.throughput),
            ("memory", bench.memory),
            ("monitoring", bench.monitoring),
            ("saturation", lambda echo: saturation.run_saturation(bench, echo)),
            ("workers", lambda echo: saturation.run_workers(bench, echo)),
            ("calls", lambda echo: callsetup.run(bench, echo)),
        ]
        profile: dict[str, Any] | None = None
        with EchoProcess(PEER_HOST) as echo:
            bench.command("echo peer", [sys.executable, "-m", "testkit.echo", PEER_HOST])
            for name, step in steps:
                if name in sections:
                    t0 = time.monotonic()
                    try:
                        step(echo)
                    except Exception as exc:  # one broken section must not lose the others
                        bench.data.setdefault("failed_sections", {})[name] = repr(exc)
                        bench.note(f"section {name} failed: {exc!r}")
                    say(f"   ({name}: {time.monotonic() - t0:.0f} s)")
            if "profile" in sections:
                profile = bench.profile(echo)
        bench.data["elapsed_s"] = round(time.monotonic() - started, 1)
        bench.data["targets"] = report.evaluate_targets(bench.data)
    if profile is not None:
        profile["started_at"] = bench.data["started_at"]
        (out / "profile.json").write_text(json.dumps(profile, indent=1))
    if sections - {"profile"}:
        (out / "bench.json").write_text(json.dumps(bench.data, indent=1))
        say("")
        say(report.render_text(bench.data, profile))
    elif profile is not None:
        say(report.render_text(None, profile))
    write_docs(args, sections, out)
    return 0


def export_tree(ref: str, dest: Path) -> tuple[Path, str]:
    """The repository at ``ref`` (``git archive``) in ``dest``, and its commit hash."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest, commit


def write_docs(args: argparse.Namespace, sections: set[str], out: Path) -> None:
    """A full run of every main section (or a profile next to one) rewrites the doc."""
    if args.no_docs or args.quick:
        return
    bench_json, profile_json = out / "bench.json", out / "profile.json"
    if not bench_json.exists():
        return
    data = json.loads(bench_json.read_text())
    if data.get("mode") != "full" or not set(DEFAULT_SECTIONS) <= set(data.get("sections", [])):
        return
    profile = json.loads(profile_json.read_text()) if profile_json.exists() else None
    args.docs.write_text(report.render_markdown(data, profile))
    say(f"wrote {args.docs}")


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads, one run each")
    parser.add_argument("--profile", action="store_true", help="only the py-spy profile")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the doc")
    parser.add_argument(
        "--baseline",
        metavar="GITREF",
        help="also run stunnerd from this commit in the throughput section (before/after)",
    )
    parser.add_argument(
        "--pion-gomaxprocs",
        metavar="N",
        type=positive,
        default=GOMAXPROCS,
        help=f"GOMAXPROCS of the pion/turn server (default {GOMAXPROCS}: one core, as the others)",
    )
    parser.add_argument(
        "--saturation-rounds",
        metavar="N",
        type=positive,
        help="rounds of the saturation search, the servers taking turns in each "
        "(default 2, 1 with --quick)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
