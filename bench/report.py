"""Tables from the bench's JSON: the console summary and ``docs/performance.md``.

Nothing in the doc's tables is typed by hand: ``python -m bench.report bench-results/bench.json
-o docs/performance.md`` regenerates it. The targets of the performance issue are evaluated
here, from the JSON alone, so a reader can check how each verdict was reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pionreport, streams  # pionreport uses this module's helpers at call time

SERVERS = ("stunnerd", "coturn", "pion")
RATIO_TARGET = 1.0  # issue 17: at least coturn's rate at every point
MONITORING_TARGET_PCT = 3.0
RSS_TARGET_BYTES = 8 * 1024
SCRAPE_TARGET_MS = 50.0


# formatting


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def fmt_kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.2f} KiB"


def fmt_met(met: bool | str | None) -> str:
    """A verdict; "split": measured in rounds that disagree (bench.saturation)."""
    if isinstance(met, str):
        return f"{met} (rounds disagree)"
    return {True: "met", False: "NOT met", None: "not measured"}[met]


@dataclass(frozen=True)
class Table:
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    note: str = ""


def render_table(table: Table, markdown: bool) -> str:
    cells = [list(table.headers), *[list(r) for r in table.rows]]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# aggregation


def aggregate(runs: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Sum the good runs of one cell: rates are total datagrams over total CPU (or wall) time."""
    good = [r for r in runs if r.get("ok")]
    if not good:
        return None
    relayed = sum(r["relayed"] for r in good)
    cpu = sum(r["cpu_s"] for r in good)
    wall = sum(r["window_s"] for r in good)
    sent = sum(r["sent"] for r in good)
    loss = sum(r["loss"] for r in good)
    drops = sum(r.get("rcvbuf_errors", 0) for r in good)
    per_run = [r["per_cpu_s"] for r in good]
    return {
        "runs": len(good),
        "relayed": relayed,
        "cpu_s": round(cpu, 3),
        "per_cpu_s": relayed / cpu if cpu else 0.0,
        "per_wall_s": relayed / wall if wall else 0.0,
        "loss_pct": 100.0 * loss / sent if sent else 0.0,
        "cpu_util": cpu / wall if wall else 0.0,
        "lost": loss,
        "rcvbuf_errors": drops,
        "min_per_cpu_s": min(per_run),
        "max_per_cpu_s": max(per_run),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def transport_runs(data: dict[str, Any], transport: str = "udp") -> list[dict[str, Any]]:
    """The throughput runs with ``transport`` client legs (runs from before TCP/TLS: UDP)."""
    runs = data.get("throughput", {}).get("runs", [])
    return [r for r in runs if r.get("transport", "udp") == transport]


def cells(data: dict[str, Any], transport: str = "udp") -> list[dict[str, Any]]:
    """One entry per (size, allocations): each server's aggregate and the ratio."""
    runs = transport_runs(data, transport)
    keys = sorted({(r["size"], r["allocations"]) for r in runs})
    out = []
    for size, allocations in keys:
        cell: dict[str, Any] = {"size": size, "allocations": allocations}
        for server in SERVERS:
            cell[server] = aggregate(
                r
                for r in runs
                if (r["server"], r["size"], r["allocations"]) == (server, size, allocations)
            )
        rates = {s: cell[s]["per_cpu_s"] if cell[s] else None for s in SERVERS}
        cell["ratio"] = ratio(rates["stunnerd"], rates["coturn"])
        out.append(cell)
    return out


def size_ratio(data: dict[str, Any], size: int, transport: str = "udp") -> float | None:
    """stunnerd/coturn over all runs at ``size`` bytes: total datagrams per total CPU."""
    runs = [r for r in transport_runs(data, transport) if r["size"] == size]
    rates = []
    for server in ("stunnerd", "coturn"):
        agg = aggregate(r for r in runs if r["server"] == server)
        rates.append(agg["per_cpu_s"] if agg else None)
    return ratio(*rates)


def memory_at(data: dict[str, Any], server: str, allocations: int) -> dict[str, Any] | None:
    """The memory row of the level that asked for ``allocations`` (made + failed: a few
    failed setups do not hide the level)."""
    for row in data.get("memory", {}).get(server, []):
        if row["allocations"] + row.get("failed", 0) == allocations:
            return dict(row)
    return None


def monitoring_verdict(mon: dict[str, Any]) -> tuple[str, bool | None]:
    """The A/B cost decides, unless it is not resolved (inside the noise, or the noise is
    unknown): then the direct estimate (CPU per scrape x 1 scrape/s over the relay's CPU)
    decides."""
    cost = mon.get("cost_pct")
    if cost is None:
        return "-", None
    noise, direct = mon.get("noise_pct"), mon.get("direct_pct")
    value = fmt_pct(cost, 2)
    if direct is None:
        return value, cost < MONITORING_TARGET_PCT
    value = f"A/B {value} (noise +-{fmt_pct(noise)}), direct {direct:.2f}%"
    if cost < MONITORING_TARGET_PCT or (noise is not None and abs(cost) > noise):
        return value, cost < MONITORING_TARGET_PCT
    return value, direct < MONITORING_TARGET_PCT


def evaluate_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with its measured value and verdict (None: not run)."""
    targets = []
    ratios = [c["ratio"] for c in cells(data) if c["ratio"] is not None]
    met = sum(r >= RATIO_TARGET for r in ratios)
    targets.append(
        {
            "name": "stunnerd / coturn datagrams per CPU-second, UDP, at every point of the plan",
            "target": f">= {RATIO_TARGET:.1f}x",
            "value": f"lowest {fmt_ratio(min(ratios))}; {met} of {len(ratios)} points"
            if ratios
            else fmt_ratio(None),
            "met": None if not ratios else met == len(ratios),
        }
    )
    value, met = monitoring_verdict(data.get("monitoring", {}))
    targets.append(
        {
            "name": "throughput cost of metrics on + a 1 s Prometheus scrape",
            "target": f"< {MONITORING_TARGET_PCT:.0f}%",
            "value": value,
            "met": met,
        }
    )
    mem = memory_at(data, "stunnerd", 10_000)
    per_alloc = mem["per_alloc_bytes"] if mem else None
    targets.append(
        {
            "name": "stunnerd RSS per idle allocation (10,000 allocations)",
            "target": "< 8 KiB",
            "value": fmt_kib(per_alloc),
            "met": None if per_alloc is None else per_alloc < RSS_TARGET_BYTES,
        }
    )
    scrape = mem.get("scrape_ms_median") if mem else None
    targets.append(
        {
            "name": "/metrics scrape time at 10,000 allocations (median)",
            "target": f"< {SCRAPE_TARGET_MS:.0f} ms",
            "value": fmt_ms(scrape),
            "met": None if scrape is None else scrape < SCRAPE_TARGET_MS,
        }
    )
    from . import callsetup, saturation  # they import this module

    targets += saturation.targets(data)
    targets += callsetup.targets(data)
    return targets + streams.targets(data)


# tables


def throughput_table(data: dict[str, Any], transport: str = "udp") -> Table:
    rows = []
    for cell in cells(data, transport):
        s, c = cell["stunnerd"], cell["coturn"]
        rows.append(
            [
                f"{cell['size']} B",
                str(cell["allocations"]),
                fmt_int(s and s["per_cpu_s"]),
                fmt_int(c and c["per_cpu_s"]),
                fmt_ratio(cell["ratio"]),
                fmt_int(s and s["per_wall_s"]),
                fmt_int(c and c["per_wall_s"]),
                fmt_pct(s and s["loss_pct"]),
                fmt_pct(c and c["loss_pct"]),
                fmt_pct(s and 100 * s["cpu_util"], 0),
                fmt_pct(c and 100 * c["cpu_util"], 0),
            ]
        )
    repeats = data.get("throughput", {}).get("repeats", 1)
    leg = "" if transport == "udp" else f", {transport.upper()} clients"
    return Table(
        f"Relayed datagrams per server CPU-second (both directions){leg}",
        [
            "payload",
            "allocs",
            "stunnerd /CPU-s",
            "coturn /CPU-s",
            "ratio",
            "stunnerd /s",
            "coturn /s",
            "stunnerd loss",
            "coturn loss",
            "stunnerd CPU",
            "coturn CPU",
        ],
        rows,
        f"{repeats} run(s) per cell, interleaved; rates are total datagrams over total time. "
        "/s is the wall-clock rate in the traffic window; CPU is the server's CPU use in it.",
    )


def spread_table(data: dict[str, Any], transport: str = "udp") -> Table:
    rows = []
    for cell in cells(data, transport):
        for server in SERVERS:
            agg = cell[server]
            if agg:
                rows.append(
                    [
                        f"{cell['size']} B",
                        str(cell["allocations"]),
                        server,
                        str(agg["runs"]),
                        fmt_int(agg["min_per_cpu_s"]),
                        fmt_int(agg["max_per_cpu_s"]),
                        fmt_int(agg["lost"]),
                        fmt_int(agg["rcvbuf_errors"]),
                    ]
                )
    headers = ["payload", "allocs", "server", "runs", "min /CPU-s", "max /CPU-s"]
    leg = "" if transport == "udp" else f" ({transport.upper()} clients)"
    return Table(
        f"Run-to-run spread, and where the loss went{leg}",
        [*headers, "lost", "UDP RcvbufErrors"],
        rows,
        "lost = messages sent - echoes received; UDP RcvbufErrors = datagrams dropped at a full "
        "socket receive buffer (any socket on the machine: server, peer or uclient) during those "
        "runs.",
    )


def allocation_table(data: dict[str, Any]) -> Table:
    rates = data.get("allocation_rate", {})
    rows = []
    for server in SERVERS:
        r = rates.get(server)
        if r:
            rows.append(
                [
                    server,
                    fmt_int(r["completed"]),
                    fmt_int(r["per_cpu_s"]),
                    fmt_int(r["per_wall_s"]),
                    fmt_int(r["failed"]),
                ]
            )
    return Table(
        "Allocations set up per server CPU-second (401, Allocate, ChannelBind)",
        ["server", "allocations", "per CPU-s", "per s", "failed"],
        rows,
        pionreport.ratios_note({s: r["per_cpu_s"] for s, r in rates.items() if r}),
    )


def monitoring_table(data: dict[str, Any]) -> Table:
    mon = data.get("monitoring", {})
    if mon.get("skipped"):
        return Table("Cost of monitoring", ["skipped"], [[mon["skipped"]]])
    rows = []
    for run in mon.get("runs", []):
        rows.append(
            [
                "on" if run["metrics"] else "off",
                fmt_int(run["per_cpu_s"]),
                fmt_pct(run["loss_pct"]),
                str(run.get("scrapes", "-")),
            ]
        )
    rows.append(["all off", fmt_int(mon.get("off_per_cpu_s")), "", ""])
    rows.append(["all on", fmt_int(mon.get("on_per_cpu_s")), "", ""])
    note = (
        f"cost = 1 - on/off = {fmt_pct(mon.get('cost_pct'), 2)}, noise (2 standard errors of "
        f"the difference) +-{fmt_pct(mon.get('noise_pct'), 1)}; direct estimate "
        f"{fmt_pct(mon.get('direct_pct'), 2)}; "
        f"stunnerd CPU per scrape: {fmt_ms(mon.get('scrape_cpu_ms'))} "
        f"({mon.get('scrape_bytes', 0):,} bytes), so 1 scrape/s is "
        f"{fmt_pct(mon.get('scrape_core_pct'), 2)} of one core. Load: {mon.get('load', '')}."
    )
    return Table(
        "Cost of monitoring: metrics off vs on with Prometheus scraping every 1 s",
        ["metrics", "datagrams /CPU-s", "loss", "scrapes"],
        rows,
        note,
    )


def memory_table(data: dict[str, Any]) -> Table:
    rows = []
    for server in SERVERS:
        for row in data.get("memory", {}).get(server, []):
            rows.append(
                [
                    server,
                    fmt_int(row["allocations"]),
                    f"{row['rss_bytes'] / 2**20:.1f} MiB",
                    fmt_kib(row["per_alloc_bytes"]),
                    fmt_ms(row.get("scrape_ms_median")),
                    fmt_ms(row.get("scrape_ms_max")),
                    fmt_pct(row.get("idle_cpu_pct"), 2),
                ]
            )
    return Table(
        "Memory per idle allocation and /metrics scrape time",
        [
            "server",
            "allocations",
            "RSS",
            "RSS per alloc",
            "scrape median",
            "scrape max",
            "idle CPU",
        ],
        rows,
        "RSS per alloc = (RSS with N allocations - RSS before) / N, each allocation with a "
        "channel bound. Idle CPU: the server's CPU use over a few seconds with N allocations "
        "and no traffic. Scrape times are stunnerd's: coturn and pion have no /metrics.",
    )


def targets_table(data: dict[str, Any]) -> Table:
    rows = [[t["name"], t["target"], t["value"], fmt_met(t["met"])] for t in evaluate_targets(data)]
    return Table("Targets (one run)", ["target", "goal", "measured", "verdict"], rows)


def machine_table(data: dict[str, Any]) -> Table:
    m = data.get("machine", {})
    keys = [
        ("nproc", "cores (nproc)"),
        ("cpu_model", "CPU"),
        ("kernel", "kernel"),
        ("python", "Python"),
        ("uvloop", "uvloop"),
        ("coturn", "coturn"),
        ("pion", "pion/turn (Debian package)"),
        ("go", "Go"),
        ("prometheus", "Prometheus"),
        ("py_spy", "py-spy"),
        ("stunner", "stunner"),
        ("rlimit_nofile", "RLIMIT_NOFILE"),
    ]
    return Table("Machine", ["", ""], [[label, str(m.get(k, "-"))] for k, label in keys])


def profile_tables(profile: dict[str, Any], label: str = "100 B, 1 allocation") -> list[Table]:
    summary = profile.get("summary", {})
    out = []
    kinds = (("categories", "kind of code"), ("self", "self time"), ("inclusive", "inclusive time"))
    for kind, title in kinds:
        rows = [
            [r["function"], str(r["samples"]), fmt_pct(r["pct"])] for r in summary.get(kind, [])
        ]
        out.append(
            Table(
                f"stunnerd profile, {label}: top by {title}",
                ["function", "samples", "share"],
                rows,
                f"{summary.get('samples', 0)} busy samples at {profile.get('rate', '')} Hz "
                f"({summary.get('idle_samples', 0)} more waited in epoll and are left out); "
                f"run {profile.get('started_at', '?')}, load: {profile.get('load', '?')}.",
            )
        )
    return out


def perf_tables(profile: dict[str, Any], label: str = "100 B, 1 allocation") -> list[Table]:
    """perf's split of each server's CPU time, also in microseconds per relayed datagram."""
    out = []
    for server, perf in (profile.get("perf") or {}).items():
        rate = perf.get("per_cpu_s") or 0.0
        us = 1e6 / rate if rate else None
        for key, title, header in (
            ("dso", "CPU time by binary", "binary"),
            ("symbols", "top symbols ([k] kernel, [.] user space)", "symbol"),
        ):
            rows = [
                [
                    r["function"],
                    fmt_pct(r["pct"], 2),
                    "-" if us is None else f"{us * r['pct'] / 100:.2f}",
                ]
                for r in perf.get(key, [])
            ]
            if rows:
                out.append(
                    Table(
                        f"{server}, {label}: {title} (perf)",
                        [header, "share", "us per datagram"],
                        rows,
                        f"perf record -e cpu-clock at {profile.get('rate', '')} Hz during "
                        f"{profile.get('load', '?')}; that run relayed {fmt_int(rate)} "
                        f"datagrams per CPU-second ({'-' if us is None else f'{us:.2f}'} us "
                        "each).",
                    )
                )
    return out


def baseline_table(data: dict[str, Any], transport: str = "udp") -> Table | None:
    """stunnerd against an older tree of itself, same loads, same run (bench --baseline)."""
    baseline = data.get("baseline")
    runs = transport_runs(data, transport)
    if not baseline or not any(r["server"] == "baseline" for r in runs):
        return None
    rows = []
    for cell in cells(data, transport):
        key = (cell["size"], cell["allocations"])
        before = aggregate(
            r for r in runs if (r["server"], r["size"], r["allocations"]) == ("baseline", *key)
        )
        after, coturn = cell["stunnerd"], cell["coturn"]
        rate = {
            name: agg["per_cpu_s"] if agg else None
            for name, agg in (("before", before), ("after", after), ("coturn", coturn))
        }
        rows.append(
            [
                f"{cell['size']} B",
                str(cell["allocations"]),
                fmt_int(rate["before"]),
                fmt_int(rate["after"]),
                fmt_ratio(ratio(rate["after"], rate["before"])),
                fmt_ratio(ratio(rate["before"], rate["coturn"])),
                fmt_ratio(ratio(rate["after"], rate["coturn"])),
            ]
        )
    leg = "" if transport == "udp" else f", {transport.upper()} clients"
    return Table(
        f"Before and after: stunnerd at {baseline['ref']} ({baseline['commit'][:10]}) against "
        f"this tree{leg}",
        [
            "payload",
            "allocs",
            "before /CPU-s",
            "after /CPU-s",
            "after/before",
            "before/coturn",
            "after/coturn",
        ],
        rows,
        "Datagrams per server CPU-second; the three servers took turns under the same loads "
        "in one run.",
    )


def tables(data: dict[str, Any]) -> list[Table]:
    before_after = baseline_table(data)
    return [
        targets_table(data),
        throughput_table(data),
        *pionreport.tables(data),
        *([before_after] if before_after else []),
        spread_table(data),
        allocation_table(data),
        monitoring_table(data),
        memory_table(data),
        *streams.tables(data),
        *new_tables(data),
    ]


def new_tables(data: dict[str, Any]) -> list[Table]:
    """The saturation, workers and call sections' tables (modules that import this one)."""
    from . import callsetup, saturation

    return [
        saturation.knee_table(data),
        saturation.overload_table(data),
        saturation.workers_table(data),
        callsetup.setup_table(data),
        callsetup.latency_table(data),
    ]


def render_text(data: dict[str, Any] | None, profile: dict[str, Any] | None = None) -> str:
    parts = []
    extra = [*perf_tables(profile), *profile_tables(profile)] if profile else []
    extra += streams.profile_tables(profile or {})
    for table in [*(tables(data) if data else []), *extra]:
        if not table.rows:
            continue
        parts.append(f"== {table.title}\n{render_table(table, markdown=False)}")
        if table.note:
            parts.append(table.note)
    parts += [f"note: {n}" for n in (data or {}).get("notes", [])]
    return "\n\n".join(parts) + "\n"


DOC_HEAD = """\
# Performance

<!-- Generated by `python -m bench.report` from the bench's JSON; edit bench/report.py. -->

A media gateway is judged by how many relayed packets it pushes per core, and by whether
watching it costs anything. `nox -s bench` measures both, with stunnerd, coturn's
`turnserver` (one relay thread) and pion/turn (what upstream STUNner runs,
[below](#pionturn-the-third-server)) side by side in one run, under the same load: coturn's
`turnutils_uclient` sending ChannelData through the server to a counting UDP echo peer (the
same peer for every server), over UDP, TCP and TLS client legs, all on loopback. It also
finds where each server saturates on one core, how fast it sets up calls, and the latency it
adds.

## How it measures

- **Datagrams per server CPU-second.** The server's CPU time is utime + stime from
  `/proc/PID/stat` (all its threads; with workers, all its processes), sampled every 0.1 s.
  The window runs from the last sample before the first datagram reaches the peer to the first
  sample after the last one, so allocation set-up stays outside. Relayed datagrams are counted
  outside the server: those the peer received (client to peer) plus the echoes uclient
  received (peer to client). A rate per CPU-second does not depend much on how busy the rest
  of this small, shared machine is; the wall-clock rate does, and is shown for context. Each
  load gets fresh server processes; the two servers take turns.
- **Load.** `turnutils_uclient -m N -n M -l SIZE -z Z -c` (N allocations, M messages each, no
  RTCP allocation). With `-z 0` one client sends about 11,000 messages/s, 50 per timer tick;
  the 100-allocation load uses `-z 1` (1,000 messages/s each). uclient starts each client 1-6
  s after its allocation, so the load ramps up. Loss = messages sent - echoes received.
- **Allocation rate.** A driver in the bench (`bench/driver.py`, stunner's STUN codec over raw
  UDP sockets) does 401, authenticated Allocate and ChannelBind from distinct 127.0.1.x source
  ports, 50 per address (stunnerd's amplification guard allows one address about 78
  unauthenticated answers per 10 s beyond what it sent, [security.md](security.md#no-amplifier);
  more clients per address would measure the guard), 64 at a time, and divides by the server's
  CPU time. stunnerd logs each
  allocation at INFO (its default), coturn logs each session to its log file (its default).
- **Cost of monitoring.** stunnerd runs with `-w`; the bench turns `metrics_endpoint` on and
  off in its config (off, on, on, off, ...) while a real Prometheus scrapes it every second,
  and compares datagrams per CPU-second at 100 B with one allocation. The A/B difference is
  resolved only beyond its noise (two standard errors of the difference of the means); inside
  it, the verdict uses the direct estimate: stunnerd's CPU time per scrape (from 50
  back-to-back scrapes) at one scrape a second, over the CPU the relay used per second.
- **Memory and scrape time.** A fresh server, 10 warm-up allocations, then N idle allocations
  made by the driver (channel bound); RSS from `/proc/PID/status`; `GET /metrics` timed from
  the bench (stunnerd with metrics on, no Prometheus).
- **Profile.** `nox -s bench -- --profile` attaches `py-spy record --native` to stunnerd during
  the 100 B, 1-allocation load and writes `bench-results/profile.svg` (flame graph),
  `profile.speedscope.json` (for speedscope.app) and `profile.txt` (collapsed stacks), and
  the summary below (samples in `epoll_pwait` are left out). py-spy cannot see inside the
  kernel and overweights time in system calls, so when `perf` is installed the same load runs
  once more under `perf record -e cpu-clock`, which splits CPU time exactly between the
  kernel, libpython, uvloop and libc. (The utime/stime split of `/proc/PID/stat` is not used:
  at these loads it swings from run to run, as the kernel attributes whole ticks.)
- **Before and after.** `nox -s bench -- --baseline GITREF` exports that commit with
  `git archive` and runs its stunnerd as a third server in the throughput section, taking
  turns with the other two under the same loads, so an optimisation is judged by figures from
  one run.

## What makes the relay path fast

Per datagram, stunnerd's user-space time was about four times coturn's; the kernel's share is
the same for both. The relay paths (`DatagramIngress.drain` and `RelayReceiver.drain` in
`stunner/turn/datapath.py`) therefore do as little per datagram as Python allows:

- **No asyncio datagram transports.** uvloop's UDPTransport reads one datagram per readiness
  callback into a fresh 256 kB `bytes` and converts each `sendto` address three times. The UDP
  sockets are registered with `loop.add_reader` instead (`stunner/udp.py`), and each wake-up
  drains up to 64 datagrams (the listener socket, which carries every client, up to 4 x 64:
  the relay sockets gather bigger batches meanwhile).
- **One system call per batch** (`stunner/batchio.py`): `recvmmsg(2)` reads the whole batch
  into 64 KiB slots of one shared mapping, through ctypes. What leaves goes by `sendmmsg(2)`
  per run: a relay's ChannelData frames to its UDP client, and on the listener, consecutive
  ChannelData payloads for the same relay socket and peer (a burst from one client); a run
  of one is a plain `sendto`, made in the drain's loop. With many allocations, the
  peer-to-client frames of all relay sockets are gathered in the listener's outbox and leave
  with one `sendmmsg` per event-loop turn (a frame waits at most for the rest of the turn;
  `ClientOutbox` in `stunner/turn/datapath.py`). Source addresses are cached (the
  first 8 bytes of the raw sockaddr, one integer each, to `(host, port)`), which skips
  `inet_ntop`. The libc calls have no ctypes `argtypes` (pointers are prebuilt `c_void_p`)
  and keep the GIL (`PyDLL`, `MSG_DONTWAIT`): per call, argument conversion and the GIL
  hand-over cost more user-space instructions than the system call's own wrapper.
- **One trip through the kernel per run** (UDP GSO, `DatagramBatch._send_gso`): a run of
  datagrams of one size to one destination (the last may be shorter) leaves as one `sendmsg`
  with a `UDP_SEGMENT` control message instead of one `sendmmsg` entry each; the kernel walks
  its send path (on loopback, the receive side too) once for up to 64 datagrams and cuts them
  afterwards. The outbox's flush, whose datagrams go to many clients, stays one `sendmmsg`.
  A kernel that refuses it falls back, counted exactly
  ([stunnerd.md](stunnerd.md#udp-segmentation-offload)).
- **No copies on the relay paths.** The client-to-peer payload is sent from its slot; the
  peer-to-client ChannelData header is written into the 4 bytes reserved in front of the
  payload. Only STUN messages, Data indications, TCP/TLS frames and a run of one datagram
  (a `bytes` slice of the mapping costs fewer instructions than a memoryview) are copied.
- **Counters once per batch**, from local variables (what was queued per run, not per
  datagram; the drop counters only when something was dropped), and the ChannelData
  forwarding inlined in the UDP listener's loop.
- **Instructions, not seconds, to decide.** `python -m bench.instructions` runs stunnerd under
  `valgrind --tool=callgrind` on a fixed workload and prints user-space instructions per
  relayed datagram, the same on every run. `python -m bench.setup_instructions` does the same
  per call setup (401, Allocate, CreatePermission, ChannelBind), and with `--profile N` lists
  the N functions where cProfile sees the setup's time.

Correctness is guarded without timing: `tests/unit/test_relay_path.py` and
`tests/unit/test_relay_batching.py` check the bytes on the wire for the batched
(`recvmmsg`/`sendmmsg`) and the portable (`recvfrom_into`/`sendto`) paths against the codec
and against each other (mixed clients, peers, channels, sizes, drops and refusals), and the
integration and e2e tests check every counter exactly.

## Commands

```console
nox -s bench                     # full run (26 minutes here with --baseline); rewrites this file
nox -s bench -- --quick          # 100 B only, short loads, one run each; bench-results/ only
nox -s bench -- --profile        # py-spy on stunnerd, 100 B, 1 allocation; adds it here
nox -s bench -- --only memory,monitoring     # also: throughput, saturation, workers, calls
nox -s bench -- --only saturation --saturation-rounds 3   # three rounds of the knee search
nox -s bench -- --only throughput --baseline HEAD~1   # before/after, side by side
python -m bench.report bench-results/bench.json --profile bench-results/profile.json \\
    -o docs/performance.md       # re-render this file from the JSON
```
"""


_TMP = re.compile(r"/tmp/stunner-bench-[^/\s]+")


def portable(command: str) -> str:
    """A command line as the doc shows it: program by name, the bench's temp dir as $TMP."""
    program, _, rest = command.partition(" ")
    program = os.path.basename(program)
    if program.startswith("python"):
        program = "python"
    return _TMP.sub("$TMP", f"{program} {rest}".strip())


def doc_head() -> str:
    """DOC_HEAD with the method of the saturation, workers and call sections before Profile."""
    from . import callsetup, saturation

    marker = "- **Profile.**"
    return DOC_HEAD.replace(marker, saturation.DOC + callsetup.DOC + marker, 1)


def render_markdown(data: dict[str, Any], profile: dict[str, Any] | None = None) -> str:
    parts = [doc_head(), pionreport.DOC]
    parts.append(
        f"## Results\n\nRun: {data.get('started_at', '?')}, mode `{data.get('mode', '?')}`, "
        f"{data.get('elapsed_s', 0):.0f} s."
    )
    for table in [machine_table(data), *tables(data)]:
        if not table.rows:
            continue
        parts.append(f"### {table.title}\n\n{render_table(table, markdown=True)}")
        if table.note:
            parts.append(table.note)
    if any(streams.tables(data)):
        parts.append(streams.HOW)
    if profile:
        parts.append("## Where stunnerd's time goes")
        for table in [*perf_tables(profile), *profile_tables(profile)]:
            parts.append(f"### {table.title}\n\n{render_table(table, markdown=True)}")
            parts.append(table.note)
        parts += [text for text in [streams.markdown(profile)] if text]
    commands = {**data.get("commands", {}), **(profile or {}).get("commands", {})}
    if commands:
        parts.append("## Exact commands of this run")
        lines = [f"# {name}\n{portable(command)}" for name, command in commands.items()]
        parts.append("```console\n" + "\n".join(lines) + "\n```")
    notes = data.get("notes", [])
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="render the bench's JSON as tables")
    parser.add_argument("json", type=Path)
    parser.add_argument("--profile", type=Path, help="profile JSON (bench-results/profile.json)")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown doc here")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    profile = json.loads(args.profile.read_text()) if args.profile else None
    if args.output:
        args.output.write_text(render_markdown(data, profile))
    else:
        sys.stdout.write(render_text(data, profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
