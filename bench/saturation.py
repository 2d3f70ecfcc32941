"""Where each server saturates on one core, what it sheds beyond, and how workers scale.

The knee is the highest offered rate a server relays with less than ``LOSS_LIMIT`` loss, with
the server pinned to one core and the load (uclient, the echo peer, the bench) to the other.
``find_knee`` steps the offered rate up geometrically on a grid shared by every server, takes
one more grid step past the first lossy one (so every server is measured overloaded at the
same absolute rates), then bisects between the best clean step and the first lossy one.

The search runs in rounds (``SatPlan.rounds``, ``--saturation-rounds``): each round starts
every server afresh, the servers taking turns, so that a noisy minute on the shared machine
falls on one round rather than on one server's only sample. A later round starts its search
``LATER_START_BELOW`` grid points at or below the server's first-round knee (``later_start``):
the grid is the same, so every server is still measured overloaded at the same absolute rates.
Per server the rounds are pooled to the lowest knee (``pooled``): the rate it relayed with
less than ``LOSS_LIMIT`` loss in every round, which is what an operator can plan with. A
verdict holds only if every round agrees; otherwise it is "split" (``agreed``).
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
    rounds: int  # each a fresh server per server, the servers taking turns


FULL = SatPlan(
    start=16_000, factor=1.5, max_steps=7, overload_steps=1, refine=1, plateau_s=3.0,
    workers_steps=4, rounds=2,
)  # fmt: skip
QUICK = SatPlan(
    start=24_000, factor=2.0, max_steps=2, overload_steps=0, refine=0, plateau_s=2.0,
    workers_steps=1, rounds=1,
)  # fmt: skip
# A later round measures again this many grid points at or below the first round's knee, so
# a knee that moved down by up to a grid step (a third, at x1.5) is found without stepping
# down; a search whose first step is already lossy steps down the grid (``find_knee``).
LATER_START_BELOW = 2


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
    floor: float | None = None,
) -> Search:
    """Step ``start * factor**k`` up until loss, a bit past it, then bisect (see module doc).

    A clean step whose generator was the limit ends the search: the knee is then a lower
    bound, and the search says so in ``limit``. With ``floor`` (a later round that starts
    above the bottom of the grid), a search whose steps were all lossy steps down the grid
    from ``start``, no lower than ``floor``, until a clean step."""
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
    rate = start / factor
    while knee is None and lossy is not None and not limit and floor and rate >= floor * 0.999:
        step = measure(rate)
        steps.append(step)
        if step.error:
            limit = f"error: {step.error}"
        elif step.loss_pct >= loss_limit:
            lossy = step
        else:
            knee = step
            limit = "load generator" if step.generator_bound else ""
        rate /= factor
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


def grid_index(plan: SatPlan, rate: float) -> int:
    """The index k of the highest grid point ``plan.start * plan.factor**k`` at or below
    ``rate`` (0 below the grid)."""
    if rate <= plan.start:
        return 0
    return math.floor(math.log(rate / plan.start) / math.log(plan.factor) + 1e-9)


@dataclass(frozen=True)
class Start:
    """Where one server's search starts in one round, and how far up it may go."""

    rate: float
    max_steps: int
    floor: float | None  # the lowest rate it may step down to; None: it starts at the bottom


def later_start(plan: SatPlan, first: dict[str, Any] | None) -> Start:
    """A round's start from the server's first-round search (None: this is the first round).

    ``LATER_START_BELOW`` grid points at or below the first round's knee (asked rate), never
    below the bottom; the top of the grid stays where the first round's was. Without a first
    knee, from the bottom."""
    knee = first and first.get("knee")
    if not knee:
        return Start(plan.start, plan.max_steps, None)
    index = max(0, grid_index(plan, knee["intended"]) - (LATER_START_BELOW - 1))
    if index == 0:
        return Start(plan.start, plan.max_steps, None)
    return Start(plan.start * plan.factor**index, plan.max_steps - index, plan.start)


def turn_order(names: list[str], number: int) -> list[str]:
    """The servers' order in round ``number`` (0-based): as given, then reversed, and so on,
    so that no server is always measured first (or last) in a round."""
    return names if number % 2 == 0 else names[::-1]


def search_server(
    bench: Any, echo: EchoProcess, server: Any, plan: SatPlan, cores: tuple[set[int], set[int]],
    start: float | None = None, factor: float | None = None, max_steps: int | None = None,
    floor: float | None = None,
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
        floor=floor,
    )


def say(text: str) -> None:
    from .run import say as run_say  # run imports this module

    run_say(text)


def rounds_wanted(bench: Any, plan: SatPlan) -> int:
    """``--saturation-rounds`` if given, else the plan's."""
    wanted = getattr(bench, "saturation_rounds", None)
    return int(wanted) if wanted else plan.rounds


def run_saturation(bench: Any, echo: EchoProcess) -> None:
    """Each server's knee on one core, the load on the other, in rounds (module doc)."""
    say("== saturation: the highest offered rate relayed with < 1% loss on one core")
    plan = plan_of(bench)
    count = rounds_wanted(bench, plan)
    server_cores, load_cores = pinning.split(pinning.cores(), 1)
    out: dict[str, Any] = {
        "server_cores": sorted(server_cores),
        "load_cores": sorted(load_cores),
        "pooling": "lowest",
        "rounds": [],
        "servers": {},  # pooled: per server, the search of its lowest-knee round
    }
    bench.data["saturation"] = out
    if server_cores == load_cores:
        bench.note("saturation: one core only, so the load shares the server's core")
    factories = dict(servers(bench))
    with pinned(echo, load_cores):
        for number in range(count):
            t0 = time.monotonic()
            found: dict[str, Any] = {}
            out["rounds"].append({"servers": found})
            for name in turn_order(list(factories), number):
                with factories[name]() as server:
                    if server is None:
                        continue
                    first = out["rounds"][0]["servers"].get(name) if number else None
                    start = later_start(plan, first)
                    say(f"  {name} round {number + 1}/{count}, from {start.rate:,.0f}/s")
                    search = search_server(
                        bench, echo, server, plan, (server_cores, load_cores),
                        start=start.rate, max_steps=start.max_steps, floor=start.floor,
                    )  # fmt: skip
                    found[name] = {**search_json(search), "start": start.rate}
            out["rounds"][-1]["seconds"] = round(time.monotonic() - t0, 1)
            out["servers"] = pooled(out["rounds"])  # after every round: a failure keeps some
    for name, entry in out["servers"].items():
        knees = ", ".join(fmt_int(k) for k in entry["round_knees"])
        say(f"  {name:8s} knee per round {knees}: pooled {fmt_int(knee_of(bench.data, name))}")


def rounds_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The saturation rounds; JSON from before rounds is one round of its ``servers``."""
    sat = data.get("saturation", {})
    return sat.get("rounds") or ([{"servers": sat["servers"]}] if sat.get("servers") else [])


def _knee_rate(entry: dict[str, Any] | None) -> float | None:
    knee = entry and entry.get("knee")
    return knee["offered"] if knee else None


def pooled(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per server, the search of the round with its lowest knee (the earliest on a tie), with
    ``round`` (1-based) and ``round_knees`` (None: no knee that round).

    The lowest, not the median: a knee claims a capacity, and the lowest is the rate the
    server relayed with < 1% loss in every round; with two rounds the median would be a rate
    one of them did not hold. A round whose search an error stopped is left out (its knee, if
    any, is only where the search stopped), unless every round's was; a round lossy from its
    lowest step has no knee, and then neither has the pool."""
    out: dict[str, dict[str, Any]] = {}
    for name in SERVERS:
        entries = [(i, r["servers"][name]) for i, r in enumerate(rounds) if name in r["servers"]]
        if not entries:
            continue
        counted = [(i, e) for i, e in entries if not e.get("limit", "").startswith("error")]
        i, chosen = min(counted or entries, key=lambda ie: (_knee_rate(ie[1]) or -1.0, ie[0]))
        knees = [_knee_rate(r["servers"].get(name)) for r in rounds]
        out[name] = {**chosen, "round": i + 1, "round_knees": knees}
    return out


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
    """stunnerd --workers N's knee; N=1 pinned to one core (the saturation section's pooled
    search, when it ran), N=2 on both (load shares them)."""
    say("== workers: saturation of stunnerd --workers N")
    plan = plan_of(bench)
    wk: dict[str, Any] = {"runs": {}}
    bench.data["workers"] = wk
    if not stunnerd_supports_workers():
        wk["skipped"] = "this stunnerd has no --workers option yet (stunnerd --help)"
        bench.note(wk["skipped"])
        return
    available = pinning.cores()
    # N=1 is the saturation section's pooled knee (the lowest of its rounds), so the workers
    # table and the saturation table show one figure for stunnerd on one core.
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


def core_shared(entry: dict[str, Any]) -> bool:
    """Whether a step that set this search's knee (the knee step, or the lowest lossy step
    above it) ran while other work kept the server's core busy (``Step.server_core_shared``)."""
    return any((entry.get(key) or {}).get("server_core_shared") for key in ("knee", "first_lossy"))


def _knee_cells(entry: dict[str, Any] | None, one_core: bool = True) -> tuple[str, str, str]:
    """Knee, server CPU, generator CPU; ``one_core``: the server had one core, so a busier
    core means someone else ran there (not so for workers on both cores, sharing them with
    the load by design)."""
    if not entry:
        return "-", "-", "-"
    knee = entry.get("knee")
    rate = fmt_int(knee and knee["offered"])
    if entry.get("limit"):
        rate = f">= {rate} ({entry['limit']})" if knee else f"- ({entry['limit']})"
    if one_core and core_shared(entry):
        rate += " (core shared)"
    return (
        rate,
        fmt_pct(knee and 100 * knee["server_cpu"], 0),
        "-"
        if not knee
        else f"{100 * knee['generator_cpu']:.0f}% ({100 * knee['load_core_busy']:.0f}%)",
    )


def round_ratios(data: dict[str, Any]) -> list[float | None]:
    """stunnerd's knee over coturn's, per round (None: one of them has no knee that round)."""
    return [
        ratio(_knee_rate(r["servers"].get("stunnerd")), _knee_rate(r["servers"].get("coturn")))
        for r in rounds_of(data)
    ]


def agreed(verdicts: list[bool | None]) -> bool | str | None:
    """Every decided round met (True) or none did (False); "split" when they disagree; None
    when no round decided."""
    decided = [v for v in verdicts if v is not None]
    if not decided:
        return None
    if all(decided):
        return True
    return "split" if any(decided) else False


def _knee_row(name: str, label: str, entry: dict[str, Any], coturn: float | None) -> list[str]:
    rate, cpu, load = _knee_cells(entry)
    knee = _knee_rate(entry)
    return [
        name,
        label,
        rate,
        fmt_int(knee and 2 * knee),
        cpu,
        load,
        fmt_ratio(ratio(knee, coturn)) if name != "coturn" else "",
        str(len(entry["steps"])),
    ]


def knee_table(data: dict[str, Any]) -> Table:
    sat = data.get("saturation", {})
    rounds = rounds_of(data)
    pool = sat.get("servers", {})
    rows = []
    for name in _servers_in(pool):
        for number, found in enumerate(rounds, 1):
            if name in found["servers"]:
                coturn = _knee_rate(found["servers"].get("coturn"))
                rows.append(_knee_row(name, str(number), found["servers"][name], coturn))
        if len(rounds) > 1:
            row = _knee_row(
                name, f"lowest (round {pool[name].get('round', 1)})", pool[name],
                knee_of(data, "coturn"),
            )  # fmt: skip
            rows.append([*row[:-1], ""])
    many = len(rounds) > 1
    return Table(
        "Saturation: highest offered rate with < 1% loss, server on one core",
        [
            "server",
            "round",
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
        "(to the peer and back). '>=' marks a knee the load generator, not the server, limited; "
        "'core shared', a knee set by a step during which other work kept the server's core "
        "busy."
        + (
            f" {len(rounds)} rounds, each a fresh server, the servers taking turns; x/coturn "
            "per round is against coturn's knee of that round. The pooled knee is the lowest "
            "round's: the rate relayed with < 1% loss in every round."
            if many
            else ""
        ),
    )


def _loss_cell(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    shared = ", core shared" if step.get("server_core_shared") else ""
    return f"{fmt_pct(step['loss_pct'], 2)} ({fmt_int(step['offered'])}{shared})"


def overload_table(data: dict[str, Any]) -> Table:
    """Loss of every server at the same asked rates, from its knee search, round by round."""
    rounds = rounds_of(data)
    names = _servers_in(data.get("saturation", {}).get("servers", {}))
    rows = []
    for number, found in enumerate(rounds, 1):
        by_rate: dict[int, dict[str, dict[str, Any]]] = {}
        for name in names:
            for step in found["servers"].get(name, {}).get("steps", []):
                by_rate.setdefault(clients_for(step["intended"]), {})[name] = step
        for clients in sorted(by_rate):
            cell = by_rate[clients]
            drops = [
                f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in cell[name]["drops"].items() if v)
                for name in names
                if name in cell and any(cell[name]["drops"].values())
            ]
            rows.append(
                [
                    str(number),
                    fmt_int(clients * 1000),
                    *[_loss_cell(cell.get(name)) for name in names],
                    "; ".join(drops) or "none",
                ]
            )
    return Table(
        "Saturation steps and overload: loss at the same asked rates (offered msgs/s)",
        [
            "round",
            "asked msgs/s",
            *[f"{n} loss (offered)" for n in names],
            "socket drops (/proc/net/udp)",
        ],
        rows,
        "Loss = 1 - echoes received / messages sent in the plateau. Socket drops say where the "
        "loss happened: the server's listener or relay sockets (the server fell behind), the "
        "peer or the clients (the load side fell behind). 'core shared': other work kept the "
        "server's core busy during that step."
        + (
            " A later round starts two grid points at or below the server's first-round knee, "
            "so it has no rows for the lowest rates."
            if len(rounds) > 1
            else ""
        ),
    )


def round_overload(found: dict[str, Any]) -> tuple[str, bool | None]:
    """One round: stunnerd's loss against coturn's at the asked rates where either was
    overloaded (>= ``LOSS_LIMIT``) and both were measured."""
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


def overload_verdict(data: dict[str, Any]) -> tuple[str, bool | str | None]:
    """Every round's overload comparison; met only if every round that decided met."""
    rounds = [round_overload(r["servers"]) for r in rounds_of(data)]
    if not rounds:
        return "-", None
    if len(rounds) == 1:
        return rounds[0]
    value = "; ".join(f"round {i}: {text}" for i, (text, _) in enumerate(rounds, 1))
    return value, agreed([met for _, met in rounds])


def knee_verdict(data: dict[str, Any]) -> tuple[str, bool | str | None]:
    """The pooled ratio (lowest knee over lowest knee) and every round's; met only if every
    round met. (If all rounds agree, the pooled ratio agrees with them: with s_i >= c_i in
    every round, min s >= min c; with s_i < c_i in every round, min s < min c.) A round whose
    stunnerd or coturn knee was set on a shared core says so."""
    r = ratio(knee_of(data, "stunnerd"), knee_of(data, "coturn"))
    rounds = rounds_of(data)
    ratios = round_ratios(data)
    limited = any(e.get("limit") for found in rounds for e in found["servers"].values())
    shared = [
        any(core_shared(found["servers"].get(n) or {}) for n in ("stunnerd", "coturn"))
        for found in rounds
    ]
    marks = [
        fmt_ratio(x) + (" (core shared)" if s else "") for x, s in zip(ratios, shared, strict=True)
    ]
    value = fmt_ratio(r)
    if len(rounds) > 1:
        value += " pooled (lowest knees); per round " + ", ".join(marks)
    elif any(shared):
        value += " (core shared)"
    value += " (a knee is a lower bound)" if limited else ""
    return value, agreed([None if x is None else x >= 1.0 for x in ratios])


def workers_table(data: dict[str, Any]) -> Table:
    wk = data.get("workers", {})
    if wk.get("skipped"):
        return Table("Scaling with worker processes", ["skipped"], [[wk["skipped"]]])
    runs = wk.get("runs", {})
    one = knee_of({"saturation": {"servers": runs}}, "1")
    rows = []
    for count in sorted(runs, key=int):
        entry = runs[count]
        rate, cpu, load = _knee_cells(entry, one_core=len(entry.get("server_cores", [0])) == 1)
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
    knees = runs.get("1", {}).get("round_knees") or []
    if len(knees) > 1:
        note += (
            " N=1 is the saturation section's pooled knee, the lowest of its rounds ("
            + ", ".join(fmt_int(k) for k in knees)
            + " msgs/s)."
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
        value, met = knee_verdict(data)
        out.append(
            {
                "name": "saturation knee on one core, stunnerd / coturn",
                "target": ">= 1.0x",
                "value": value,
                "met": met,
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
  was busier than the server by 25 points or more is flagged as shared in the console log, the
  JSON (`server_core_shared`) and the tables ("core shared"), since the server then had less
  than a core.
- **Saturation rounds.** On this shared machine one search's knee moved by about a third from
  one run to the next, so the search runs in rounds (2 in the full plan, 1 with `--quick`;
  `--saturation-rounds N` sets it): each round starts every server afresh, the servers taking
  turns (in the first round stunnerd first, in the second last). A later round starts two
  grid points at or below the server's knee of the first round (and steps down the grid if
  that first step already loses), on the same grid and up to the same top, so every
  server is still measured overloaded at the same absolute rates. Each round's knees and
  overload are shown. The pooled knee is each server's lowest round knee, the rate it relayed
  with < 1% loss in every round (an operator plans with a capacity that held every time; the
  median of two rounds would be a rate one of them did not hold), and the pooled ratio is
  lowest over lowest. A verdict is met only if every round meets it, not met if none does,
  and "split" when the rounds disagree: then this machine cannot tell, and neither figure is
  the answer. (If the rounds agree, the pooled ratio agrees with them.)
- **Workers.** `stunnerd --workers N` under the same search: N = 1 is the saturation run (one
  core, load on the other; its pooled knee, the lowest round's); N = 2 is pinned to both
  cores and the load shares them, so its knee is a lower bound of what two dedicated cores
  give. Beyond two: on a machine with C
  cores, pin N workers to N cores and the load to the other C - N, for N = 1, 2, 4, ... while
  C - N cores are enough to offer the load (checked, as here, by the load cores' busy share).
  After the N = 2 search, a complete 10-client uclient run checks that stunnerd's
  `stunner_cluster_packets_total` summed over the workers equals what the peer received (tx)
  and sent (rx).
"""
