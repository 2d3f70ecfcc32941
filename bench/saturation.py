"""Where each server saturates on one core, what it sheds beyond, and how workers scale.

The knee is the highest offered rate a server relays with less than ``LOSS_LIMIT`` loss, with
the server pinned to one core and the load (uclient, the echo peer, the bench) to the other.
``find_knee`` steps the offered rate up geometrically on a grid shared by every server, takes
one more grid step past the first lossy one (so every server is measured overloaded at the
same absolute rates), then bisects between the best clean step and the first lossy one.
"""

from __future__ import annotations

import contextlib
import math
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from testkit.echo import EchoProcess

from . import pinning
from .load import LoadSpec, run_load
from .paced import Step, clients_for, run_step, split_clients
from .report import SERVERS, Table, fmt_int, fmt_pct, fmt_ratio, ratio
from .servers import stunnerd_supports_workers

LOSS_LIMIT = 1.0  # percent
WORKERS_TARGET = 0.9


@dataclass(frozen=True)
class SatPlan:
    start: float  # messages/s
    factor: float
    max_steps: int
    overload_steps: int  # grid steps past the first lossy one
    refine: int  # bisections between the last clean and the first lossy step
    plateau_s: float
    workers_steps: int


FULL = SatPlan(
    start=16_000, factor=1.5, max_steps=7, overload_steps=1, refine=1, plateau_s=3.0,
    workers_steps=4,
)  # fmt: skip
QUICK = SatPlan(
    start=24_000, factor=2.0, max_steps=2, overload_steps=0, refine=0, plateau_s=2.0,
    workers_steps=1,
)  # fmt: skip


@dataclass
class Search:
    steps: list[Step]
    knee: Step | None  # the best step under the loss limit
    first_lossy: Step | None
    limit: str  # why the search stopped short of a lossy step, or ""


def find_knee(
    measure: Callable[[float], Step],
    start: float,
    factor: float,
    max_steps: int,
    overload_steps: int = 1,
    refine: int = 1,
    loss_limit: float = LOSS_LIMIT,
) -> Search:
    """Step ``start * factor**k`` up until loss, a bit past it, then bisect (see module doc).

    A clean step whose generator was the limit ends the search: the knee is then a lower
    bound, and the search says so in ``limit``."""
    steps: list[Step] = []
    knee: Step | None = None
    lossy: Step | None = None
    limit = ""
    rate = start
    past = 0
    while len(steps) < max_steps:
        step = measure(rate)
        steps.append(step)
        if step.error:
            limit = f"error: {step.error}"
            break
        if step.loss_pct >= loss_limit:
            lossy = lossy or step
            past += 1
            if past > overload_steps:
                break
        else:
            if knee is None or step.offered > knee.offered:
                knee = step
            if step.generator_bound:
                limit = "load generator"
                break
        rate *= factor
    else:
        if lossy is None:
            limit = f"{max_steps} steps without loss"
    for _ in range(refine):
        if knee is None or lossy is None:
            break
        mid = math.sqrt(knee.intended * lossy.intended)
        if clients_for(mid) in (clients_for(knee.intended), clients_for(lossy.intended)):
            break
        step = measure(mid)
        steps.append(step)
        if step.error:
            break
        if step.loss_pct < loss_limit:
            knee = step if step.offered > knee.offered else knee
        elif step.intended < lossy.intended:
            lossy = step
    return Search(steps, knee, lossy, limit)


def search_json(search: Search) -> dict[str, Any]:
    return {
        "steps": [s.to_json() for s in search.steps],
        "knee": search.knee.to_json() if search.knee else None,
        "first_lossy": search.first_lossy.to_json() if search.first_lossy else None,
        "limit": search.limit,
    }


def plan_of(bench: Any) -> SatPlan:
    return QUICK if bench.data.get("mode") == "quick" else FULL


@contextlib.contextmanager
def pinned(echo: EchoProcess, load_cores: set[int]) -> Iterator[None]:
    """The bench (and so uclient, which it starts) and the echo peer on ``load_cores``."""
    old = pinning.pin_self(load_cores)
    pinning.pin_tree(echo.pid, load_cores)
    try:
        yield
    finally:
        pinning.pin_self(old)
        pinning.pin_tree(echo.pid, old)


def servers(bench: Any) -> Iterator[tuple[str, Any]]:
    """(name, context manager factory) of every server this bench can start."""
    for name in SERVERS:  # Bench methods of these names; absent servers are skipped
        factory = getattr(bench, name, None)
        if factory is not None:
            yield name, factory


def search_server(
    bench: Any, echo: EchoProcess, server: Any, plan: SatPlan, cores: tuple[set[int], set[int]],
    start: float | None = None, factor: float | None = None, max_steps: int | None = None,
) -> Search:  # fmt: skip
    """The knee search against one running server, pinned to ``cores`` (server, load)."""
    pinning.pin_tree(server.pid, cores[0])
    creds = (bench.creds.user, bench.creds.password)

    def measure(rate: float) -> Step:
        hosts = [bench.client_host() for _ in split_clients(clients_for(rate))]
        step = run_step(server, creds, echo, rate, plan.plateau_s, hosts, cores)
        if step.argv:
            bench.command("uclient (paced, one of the processes)", step.argv)
        flag = " [generator-bound]" if step.generator_bound else ""
        flag += " [server core shared]" if step.server_core_shared else ""
        say(
            f"  {server.name:8s} offered {step.offered:9,.0f}/s (asked {rate:,.0f}): loss "
            f"{step.loss_pct:5.2f}%, server CPU {100 * step.server_cpu:3.0f}% (core "
            f"{100 * step.server_core_busy:3.0f}%), generator CPU "
            f"{100 * step.generator_cpu:3.0f}% (core {100 * step.load_core_busy:3.0f}%)"
            f"{flag}{' ' + step.error if step.error else ''}"
        )
        return step

    return find_knee(
        measure,
        start or plan.start,
        factor or plan.factor,
        max_steps or plan.max_steps,
        plan.overload_steps,
        plan.refine,
    )


def say(text: str) -> None:
    from .run import say as run_say  # run imports this module

    run_say(text)


def run_saturation(bench: Any, echo: EchoProcess) -> None:
    """Each server's knee on one core, the load on the other."""
    say("== saturation: the highest offered rate relayed with < 1% loss on one core")
    plan = plan_of(bench)
    server_cores, load_cores = pinning.split(pinning.cores(), 1)
    out: dict[str, Any] = {
        "server_cores": sorted(server_cores),
        "load_cores": sorted(load_cores),
        "servers": {},
    }
    bench.data["saturation"] = out
    if server_cores == load_cores:
        bench.note("saturation: one core only, so the load shares the server's core")
    with pinned(echo, load_cores):
        for name, factory in servers(bench):
            with factory() as server:
                if server is None:
                    continue
                search = search_server(bench, echo, server, plan, (server_cores, load_cores))
                out["servers"][name] = search_json(search)


def knee_of(data: dict[str, Any], server: str) -> float | None:
    entry = data.get("saturation", {}).get("servers", {}).get(server)
    knee = entry and entry.get("knee")
    return knee["offered"] if knee else None


def metrics_sums(text: str) -> dict[str, float]:
    """``stunner_*_packets_total`` summed per (metric, direction) from a Prometheus text page."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "_packets_total{" not in line:
            continue
        name, _, rest = line.partition("{")
        labels, _, value = rest.rpartition("} ")
        direction = next(
            (p.split("=")[1].strip('"') for p in labels.split(",") if p.startswith("direction=")),
            "",
        )
        key = f"{name}:{direction}"
        out[key] = out.get(key, 0.0) + float(value.split()[0])
    return out


def settled(read: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``read()`` once two reads 0.5 s apart agree: in-flight datagrams have landed and every
    worker's counters have reached the page (or after ``timeout``, the last read)."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    return last


def metrics_check(bench: Any, echo: EchoProcess, server: Any) -> dict[str, Any]:
    """After a complete uclient run, stunnerd's packet counters against the peer's counts."""

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            return metrics_sums(r.read().decode())

    def both() -> tuple[dict[str, float], Any]:
        return scrape(), echo.counts()

    before, before_peer = settled(both)
    result = run_load(
        server, (bench.creds.user, bench.creds.password), echo, LoadSpec(10, 100, 2000, 1),
        local_host=bench.client_host(),
    )  # fmt: skip
    after, after_peer = settled(both)
    peer = after_peer - before_peer
    delta = {k: round(after.get(k, 0) - before.get(k, 0)) for k in after}
    cluster_tx = delta.get("stunner_cluster_packets_total:tx", 0)
    cluster_rx = delta.get("stunner_cluster_packets_total:rx", 0)
    return {
        "uclient_sent": result.sent,
        "uclient_received": result.client_rx,
        "peer_received": peer.packets,
        "peer_sent": peer.sent_packets,
        "cluster_tx": cluster_tx,
        "cluster_rx": cluster_rx,
        "exact": cluster_tx == peer.packets and cluster_rx == peer.sent_packets,
        "metric_deltas": delta,
    }


def run_workers(bench: Any, echo: EchoProcess) -> None:
    """stunnerd --workers N's knee; N=1 pinned to one core, N=2 on both (load shares them)."""
    say("== workers: saturation of stunnerd --workers N")
    plan = plan_of(bench)
    wk: dict[str, Any] = {"runs": {}}
    bench.data["workers"] = wk
    if not stunnerd_supports_workers():
        wk["skipped"] = "this stunnerd has no --workers option yet (stunnerd --help)"
        bench.note(wk["skipped"])
        return
    available = pinning.cores()
    one = bench.data.get("saturation", {}).get("servers", {}).get("stunnerd")
    for count in (1, 2):
        server_cores, load_cores = pinning.split(available, count)
        if count == 1 and one is not None:
            wk["runs"]["1"] = {**one, "server_cores": sorted(server_cores), "reused": True}
            continue
        previous = knee_of({"saturation": {"servers": wk["runs"]}}, "1")
        start = previous if previous else plan.start  # N workers should clear it
        with pinned(echo, load_cores), bench.stunnerd(workers=count, metrics=True) as server:
            search = search_server(
                bench, echo, server, plan, (server_cores, load_cores),
                start=start, factor=1.3, max_steps=plan.workers_steps,
            )  # fmt: skip
            entry = {**search_json(search), "server_cores": sorted(server_cores)}
            if count > 1:
                entry["metrics"] = metrics_check(bench, echo, server)
            wk["runs"][str(count)] = entry


# report


def _servers_in(section: dict[str, Any]) -> list[str]:
    return [s for s in SERVERS if s in section]


def _knee_cells(entry: dict[str, Any] | None) -> tuple[str, str, str]:
    if not entry:
        return "-", "-", "-"
    knee = entry.get("knee")
    rate = fmt_int(knee and knee["offered"])
    if entry.get("limit"):
        rate = f">= {rate} ({entry['limit']})" if knee else f"- ({entry['limit']})"
    return (
        rate,
        fmt_pct(knee and 100 * knee["server_cpu"], 0),
        "-"
        if not knee
        else f"{100 * knee['generator_cpu']:.0f}% ({100 * knee['load_core_busy']:.0f}%)",
    )


def knee_table(data: dict[str, Any]) -> Table:
    sat = data.get("saturation", {})
    found = sat.get("servers", {})
    coturn = knee_of(data, "coturn")
    rows = []
    for name in _servers_in(found):
        rate, cpu, load = _knee_cells(found[name])
        knee = knee_of(data, name)
        rows.append(
            [
                name,
                rate,
                fmt_int(knee and 2 * knee),
                cpu,
                load,
                fmt_ratio(ratio(knee, coturn)) if name != "coturn" else "",
                str(len(found[name]["steps"])),
            ]
        )
    return Table(
        "Saturation: highest offered rate with < 1% loss, server on one core",
        [
            "server",
            "knee msgs/s",
            "relayed datagrams/s",
            "server CPU",
            "generator CPU (its core)",
            "x/coturn",
            "steps",
        ],
        rows,
        f"Server pinned to CPU {sat.get('server_cores', '?')}, uclient + echo peer + bench to "
        f"CPU {sat.get('load_cores', '?')}. 100 B ChannelData, one message per client per ms "
        "(-z 1); offered = what uclient sent in the plateau; each message is relayed twice "
        "(to the peer and back). '>=' marks a knee the load generator, not the server, limited.",
    )


def overload_table(data: dict[str, Any]) -> Table:
    """Loss of every server at the same asked rates, from its knee search."""
    found = data.get("saturation", {}).get("servers", {})
    names = _servers_in(found)
    by_rate: dict[int, dict[str, dict[str, Any]]] = {}
    for name in names:
        for step in found[name]["steps"]:
            by_rate.setdefault(clients_for(step["intended"]), {})[name] = step
    rows = []
    for clients in sorted(by_rate):
        cell = by_rate[clients]
        row = [fmt_int(clients * 1000)]
        for name in names:
            step = cell.get(name)
            row.append(
                "-"
                if step is None
                else f"{fmt_pct(step['loss_pct'], 2)} ({fmt_int(step['offered'])})"
            )
        drops = [
            f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in cell[name]["drops"].items() if v)
            for name in names
            if name in cell and any(cell[name]["drops"].values())
        ]
        row.append("; ".join(drops) or "none")
        rows.append(row)
    return Table(
        "Saturation steps and overload: loss at the same asked rates (offered msgs/s)",
        ["asked msgs/s", *[f"{n} loss (offered)" for n in names], "socket drops (/proc/net/udp)"],
        rows,
        "Loss = 1 - echoes received / messages sent in the plateau. Socket drops say where the "
        "loss happened: the server's listener or relay sockets (the server fell behind), the "
        "peer or the clients (the load side fell behind).",
    )


def overload_verdict(data: dict[str, Any]) -> tuple[str, bool | None]:
    """stunnerd's loss against coturn's at the asked rates both were measured overloaded."""
    found = data.get("saturation", {}).get("servers", {})
    if "stunnerd" not in found or "coturn" not in found:
        return "-", None
    loss = {
        name: {clients_for(s["intended"]): s["loss_pct"] for s in found[name]["steps"]}
        for name in ("stunnerd", "coturn")
    }
    common = [
        c
        for c in sorted(set(loss["stunnerd"]) & set(loss["coturn"]))
        if max(loss["stunnerd"][c], loss["coturn"][c]) >= LOSS_LIMIT
    ]
    if not common:
        return "no common overloaded rate", None
    parts = [
        f"{c * 1000:,}/s: {loss['stunnerd'][c]:.1f}% vs {loss['coturn'][c]:.1f}%" for c in common
    ]
    met = all(loss["stunnerd"][c] <= loss["coturn"][c] + 0.5 for c in common)
    return "; ".join(parts), met


def workers_table(data: dict[str, Any]) -> Table:
    wk = data.get("workers", {})
    if wk.get("skipped"):
        return Table("Scaling with worker processes", ["skipped"], [[wk["skipped"]]])
    runs = wk.get("runs", {})
    one = knee_of({"saturation": {"servers": runs}}, "1")
    rows = []
    for count in sorted(runs, key=int):
        entry = runs[count]
        rate, cpu, load = _knee_cells(entry)
        knee = knee_of({"saturation": {"servers": runs}}, count)
        rows.append(
            [count, str(entry.get("server_cores", "?")), rate, cpu, load,
             fmt_ratio(ratio(knee, one))]
        )  # fmt: skip
    note = (
        "N=1 is pinned to one core with the load on the other; N=2 runs on both cores and the "
        "load shares them, so its knee is a lower bound (on this 2-core machine no core is left "
        "for the generator). Target: knee(N) >= 0.9 x N x knee(1)."
    )
    check = runs.get("2", {}).get("metrics")
    if check:
        note += (
            f" Metrics after a complete 10-client run on 2 workers: cluster tx "
            f"{check['cluster_tx']:,} vs peer received {check['peer_received']:,}, cluster rx "
            f"{check['cluster_rx']:,} vs peer sent {check['peer_sent']:,}: "
            f"{'exact' if check['exact'] else 'NOT exact'}."
        )
    return Table(
        "Scaling with worker processes: saturation of stunnerd --workers N",
        [
            "workers",
            "server CPUs",
            "knee msgs/s",
            "server CPU",
            "generator CPU (its core)",
            "x N=1",
        ],
        rows,
        note,
    )


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if data.get("saturation"):
        s, c = knee_of(data, "stunnerd"), knee_of(data, "coturn")
        r = ratio(s, c)
        limited = any(e.get("limit") for e in data["saturation"].get("servers", {}).values())
        out.append(
            {
                "name": "saturation knee on one core, stunnerd / coturn",
                "target": ">= 1.0x",
                "value": fmt_ratio(r) + (" (a knee is a lower bound)" if limited else ""),
                "met": None if r is None else r >= 1.0,
            }
        )
        value, met = overload_verdict(data)
        out.append(
            {
                "name": "loss under overload, stunnerd vs coturn (same asked rates)",
                "target": "stunnerd <= coturn (+0.5 points)",
                "value": value,
                "met": met,
            }
        )
    runs = data.get("workers", {}).get("runs", {})
    if "1" in runs and "2" in runs:
        runs_data = {"saturation": {"servers": runs}}
        r = ratio(knee_of(runs_data, "2"), knee_of(runs_data, "1"))
        out.append(
            {
                "name": "stunnerd --workers 2 knee / --workers 1 knee",
                "target": f">= {2 * WORKERS_TARGET:.1f}x",
                "value": fmt_ratio(r) + " (lower bound: load shares the cores)",
                "met": None if r is None else r >= 2 * WORKERS_TARGET,
            }
        )
        check = runs["2"].get("metrics")
        if check:
            out.append(
                {
                    "name": "metrics exact across 2 workers (cluster packets vs the peer)",
                    "target": "equal",
                    "value": f"tx {check['cluster_tx']:,}/{check['peer_received']:,}, "
                    f"rx {check['cluster_rx']:,}/{check['peer_sent']:,}",
                    "met": bool(check["exact"]),
                }
            )
    return out


DOC = """\
- **Saturation (one core).** The server is pinned to CPU 0 (every thread and worker process,
  through `sched_setaffinity` on each `/proc/PID/task` entry); uclient, the echo peer and the
  bench are pinned to CPU 1. The load is paced: uclient with `-z 1` sends one 100 B
  ChannelData message per client per millisecond, so `-m M` asks for about M x 1,000
  messages/s, split over uclient processes of 25 clients each so that their allocations are set
  up in parallel. uclient starts each client 1-6 s after its allocation, so each step waits
  7 s after the first datagram reaches the peer, then measures a plateau of 3 s (2 s with
  `--quick`): the offered rate is what uclient reports it sent in its progress intervals whose
  send rate is at least 90% of the highest (not the formula), and loss is 1 - echoes received /
  messages sent in the same intervals. The asked rates form a grid shared by all servers (16,000
  x 1.5^k messages/s); the search steps up until a step loses >= 1%, takes one more grid step
  (both servers are thus measured overloaded at the same absolute rates), then bisects once
  between the best clean step and the first lossy one. The knee is the offered rate of the
  best clean step. When uclient and the echo peer used >= 90% of a core (their CPU time) or
  uclient sent < 90% of what was asked, the generator and not the server may be the limit:
  the search stops and the knee is shown as a lower bound. Per-socket drops
  (`/proc/net/udp`) say whose socket dropped.
  The machine is shared with other work the bench does not control: a step whose server core
  was busier than the server by 25 points or more is flagged as shared in the console log and
  the JSON (`server_core_shared`), since the server then had less than a core.
- **Workers.** `stunnerd --workers N` under the same search: N = 1 is the saturation run (one
  core, load on the other); N = 2 is pinned to both cores and the load shares them, so its
  knee is a lower bound of what two dedicated cores give. Beyond two: on a machine with C
  cores, pin N workers to N cores and the load to the other C - N, for N = 1, 2, 4, ... while
  C - N cores are enough to offer the load (checked, as here, by the load cores' busy share).
  After the N = 2 search, a complete 10-client uclient run checks that stunnerd's
  `stunner_cluster_packets_total` summed over the workers equals what the peer received (tx)
  and sent (rx).
"""
