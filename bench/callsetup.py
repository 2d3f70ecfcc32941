"""Call setup and added latency, per server, with the server pinned to one core.

For each server: allocations per server CPU-second with nothing else running (the browser's
sequence: 401, Allocate, CreatePermission, ChannelBind; ``WINDOW`` setups in flight), then,
under a background relay load at half of the lowest knee (``bench.saturation``), the round
trip of a probe through the relay (``bench.latency``) and the latency of one full setup (one
at a time, so the driver's own queue is not measured). The timings come in rounds, the
servers taking turns (``LatencyPlan``), and are pooled with their spread across rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testkit.echo import EchoProcess

from . import pinning
from .driver import WINDOW, AllocationDriver, DriveResult
from .latency import Probe, floor, percentile_ms, pooled, probe, spread
from .paced import clients_for, split_clients, uclients
from .report import SERVERS, Table, fmt_int, fmt_ratio, ratio
from .saturation import knee_of, pinned, say, servers

LOAD_SHARE = 0.5  # of the server's knee
FALLBACK_RATE = 10_000  # messages/s when no knee was measured in this run
PROBE_HOST = "127.0.3.1"
FLOOR_HOST = "127.0.3.2"
PROBE_RATE = 500.0  # probes per second at most (one in flight; an echo takes well under 2 ms)


@dataclass(frozen=True)
class LatencyPlan:
    """How much each server is timed. Each of ``rounds`` rounds starts every server afresh
    under a fresh background load, the servers taking turns round by round, so that a noisy
    minute on a shared machine falls on all of them rather than on one. Per server and round:
    ``probes`` round trips and ``timed`` setups; first ``rate`` setups, idle, for the rate
    (pooled over the rounds: one round's few tenths of a CPU-second are a few dozen clock
    ticks, too coarse alone)."""

    rounds: int
    probes: int
    timed: int
    rate: int


# Full: 3,000 probes per server, so the pooled p99 is the 30th-largest round trip (300 gave it
# from the 3rd), and each round's own p99 (the 10th-largest of 1,000) shows the spread; 600
# timed setups. Quick: 1,000 probes and 200 setups in two rounds.
PLANS = {"full": LatencyPlan(3, 1000, 200, 2000), "quick": LatencyPlan(2, 500, 100, 500)}


def setup_json(result: DriveResult) -> dict[str, Any]:
    out = dict(result.to_json())
    for pct in (50, 99):
        out[f"p{pct}_ms"] = percentile_ms(result.durations, pct)
    return out


def drive(
    server: Any, peer: tuple[str, int], creds: Any, count: int, window: int, first: int
) -> DriveResult:
    """``count`` browser-like setups, ``window`` at a time, and the server's CPU for them."""
    driver = AllocationDriver(
        (server.host, server.port), creds.user, creds.password, peer, first,
        create_permission=True, window=window,
    )  # fmt: skip
    try:
        cpu0 = server.cpu_seconds()
        result = driver.drive(count, timeout=60.0)
        result.server_cpu_s = server.cpu_seconds() - cpu0
    finally:
        driver.close()
    return result


def relay_probe(server: Any, echo: EchoProcess, creds: Any, count: int) -> Probe:
    driver = AllocationDriver(
        (server.host, server.port), creds.user, creds.password, echo.address, 900_000
    )
    try:
        made = driver.drive(1)
        if made.completed != 1:
            raise RuntimeError(f"{server.name}: probe allocation failed: {dict(made.errors)}")
        return probe(driver.sockets[-1], (server.host, server.port), count, PROBE_RATE)
    finally:
        driver.close()


def background_rate(data: dict[str, Any]) -> float:
    """Half of the lowest knee measured in this run, the same for every server so their
    latencies compare; ``FALLBACK_RATE`` without one."""
    knees = [k for k in (knee_of(data, n) for n in SERVERS) if k]
    return LOAD_SHARE * min(knees) if knees else FALLBACK_RATE


def contenders(bench: Any) -> list[tuple[str, Any]]:
    """Every server of the run, and stunnerd from ``--baseline`` as "baseline" (before/after
    in the same rounds)."""
    found = list(servers(bench))
    if getattr(bench, "baseline", None) is not None:
        found.append(("baseline", bench.baseline_stunnerd))
    return found


def timing_json(rounds: list[list[float]]) -> dict[str, Any]:
    """Pooled p50/p99 (ms) over every round's samples, and each one's spread across rounds."""
    every = [value for samples in rounds for value in samples]
    out: dict[str, Any] = {"samples": len(every)}
    for pct in (50, 99):
        out[f"p{pct}_ms"] = percentile_ms(every, pct)
        out[f"p{pct}_rounds_ms"] = spread(rounds, pct)
    return out


def pooled_rate(runs: list[DriveResult]) -> dict[str, Any]:
    """The idle setup rate over every round: all setups over all the server CPU they took (not
    a mean of ratios), each round's own rate beside it."""
    out = setup_json(
        DriveResult(
            requested=sum(r.requested for r in runs),
            completed=sum(r.completed for r in runs),
            failed=sum(r.failed for r in runs),
            wall_s=sum(r.wall_s for r in runs),
            server_cpu_s=sum(r.server_cpu_s for r in runs),
            durations=[d for r in runs for d in r.durations],
        )
    )
    out["rounds_per_cpu_s"] = [round(r.per_cpu_s, 1) for r in runs]
    return out


def summary(probes: list[Probe], setups: list[DriveResult]) -> dict[str, Any]:
    """One server's rounds as its table entry: probes and timed setups pooled, with spread."""
    probe_out = pooled(probes).to_json() | timing_json([p.rtts for p in probes])
    probe_out["rounds"] = [p.to_json() for p in probes]
    loaded = timing_json([d.durations for d in setups])
    loaded["completed"] = sum(d.completed for d in setups)
    loaded["failed"] = sum(d.failed for d in setups)
    return {"probe": probe_out, "loaded": loaded}


def loaded_round(
    bench: Any, echo: EchoProcess, server: Any, rate: float, plan: LatencyPlan
) -> tuple[Probe, DriveResult]:
    """Under a background load at ``rate``: ``plan.probes`` round trips, then ``plan.timed``
    setups one at a time (so the driver's own queue is not measured)."""
    hosts = [bench.client_host() for _ in split_clients(clients_for(rate))]
    creds = (bench.creds.user, bench.creds.password)
    seconds = 8.0 + plan.timed * 0.02 + plan.probes / PROBE_RATE
    with uclients(server, creds, echo, rate, seconds, hosts):
        measured = relay_probe(server, echo, bench.creds, plan.probes)
        timed = drive(server, echo.address, bench.creds, plan.timed, 1, 500_000)
    return measured, timed


def run(bench: Any, echo: EchoProcess) -> None:
    say("== call setup and added latency (server on one core, background load at 50% knee)")
    plan = PLANS[bench.data.get("mode", "full")]
    server_cores, load_cores = pinning.split(pinning.cores(), 1)
    rate = background_rate(bench.data)
    out: dict[str, Any] = {"servers": {}, "load_share": LOAD_SHARE, "rounds": plan.rounds}
    bench.data["calls"] = out
    probes: dict[str, list[Probe]] = {}
    setups: dict[str, list[DriveResult]] = {}
    rates: dict[str, list[DriveResult]] = {}
    with pinned(echo, load_cores):
        out["floor"] = floor(
            echo.address, FLOOR_HOST, plan.rounds * plan.probes, PROBE_RATE
        ).to_json()
        for number in range(plan.rounds):
            for name, factory in contenders(bench):
                with factory() as server:
                    if server is None:
                        continue
                    pinning.pin_tree(server.pid, server_cores)
                    entry = out["servers"].setdefault(name, {"background_msgs_s": rate})
                    rates.setdefault(name, []).append(
                        drive(server, echo.address, bench.creds, plan.rate, WINDOW, 0)
                    )
                    measured, timed = loaded_round(bench, echo, server, rate, plan)
                    probes.setdefault(name, []).append(measured)
                    setups.setdefault(name, []).append(timed)
                    got = measured.to_json()
                    say(
                        f"  {name:8s} round {number + 1}/{plan.rounds} under {rate:,.0f} msgs/s: "
                        f"setup p50 {_ms(percentile_ms(timed.durations, 50))} p99 "
                        f"{_ms(percentile_ms(timed.durations, 99))} ({timed.completed}), RTT "
                        f"p50 {_ms(got['p50_ms'])} p99 {_ms(got['p99_ms'])} ({got['count']})"
                    )
    for name, entry in out["servers"].items():
        entry["idle"] = pooled_rate(rates[name])
        entry.update(summary(probes[name], setups[name]))
        say(
            f"  {name:8s} setups {entry['idle']['per_cpu_s']:,.0f}/CPU-s; pooled: setup p99 "
            f"{_ms(entry['loaded']['p99_ms'])} of {entry['loaded']['samples']}, RTT p50 "
            f"{_ms(entry['probe']['p50_ms'])} p99 {_ms(entry['probe']['p99_ms'])} of "
            f"{entry['probe']['samples']}, round p99s {_range(entry['probe']['p99_rounds_ms'])}"
        )


def _names(calls: dict[str, Any]) -> list[str]:
    return [n for n in (*SERVERS, "baseline") if n in calls.get("servers", {})]


def _label(data: dict[str, Any], name: str) -> str:
    """A row's name; stunnerd from ``--baseline`` says which commit it is."""
    if name != "baseline":
        return name
    ref = data.get("baseline", {})
    name, commit = str(ref.get("ref", "?")), str(ref.get("commit", ""))[:7]
    return f"stunnerd at {name}" + ("" if commit.startswith(name[:7]) else f" ({commit})")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _range(values: list[float] | tuple[float, float] | None) -> str:
    """A spread across rounds, e.g. "1.02-1.31 ms"; "-" without one."""
    return "-" if not values else f"{values[0]:.2f}-{values[1]:.2f} ms"


def _rate_range(values: list[float] | None) -> str:
    """The spread of the rounds' setup rates, e.g. "5,882-6,667"; "-" without rounds."""
    return "-" if not values else f"{fmt_int(min(values))}-{fmt_int(max(values))}"


def _rounds(calls: dict[str, Any]) -> str:
    rounds = calls.get("rounds", 1)
    return f"{rounds} round{'s' if rounds != 1 else ''}"


def setup_table(data: dict[str, Any]) -> Table:
    calls = data.get("calls", {})
    found = calls.get("servers", {})
    coturn = found.get("coturn", {}).get("idle", {}).get("per_cpu_s")
    rows = []
    for name in _names(calls):
        idle, loaded = found[name]["idle"], found[name]["loaded"]
        rows.append(
            [
                _label(data, name),
                fmt_int(idle["per_cpu_s"]),
                _rate_range(idle.get("rounds_per_cpu_s")),
                fmt_ratio(ratio(idle["per_cpu_s"], coturn)) if name != "coturn" else "",
                fmt_int(idle["failed"]),
                fmt_int(found[name]["background_msgs_s"]),
                fmt_int(loaded["completed"]),
                _ms(loaded["p50_ms"]),
                _ms(loaded["p99_ms"]),
                _range(loaded.get("p99_rounds_ms")),
            ]
        )
    return Table(
        "Call setup: 401, Allocate, CreatePermission, ChannelBind",
        [
            "server",
            "setups /CPU-s",
            "per round",
            "x/coturn",
            "failed",
            "background msgs/s",
            "timed setups",
            "setup p50",
            "setup p99",
            "p99 per round",
        ],
        rows,
        "setups /CPU-s: 64 in flight, nothing else running, server on one core; every setup "
        "of every round over all the server CPU time they took ('per round': the lowest and "
        "highest round's own rate). "
        "Setup p50/p99: one setup at a time (first request to last answer), under a background "
        "uclient load at half of the lowest knee, the same for every server; pooled over "
        f"{_rounds(calls)}, each a fresh server and load, the servers taking turns; 'p99 per "
        "round' is the lowest and highest of the rounds' own p99.",
    )


def latency_table(data: dict[str, Any]) -> Table:
    calls = data.get("calls", {})
    found = calls.get("servers", {})
    base = calls.get("floor", {})
    rows = []
    if base:
        rows.append(
            ["direct to the peer (floor)", "-", fmt_int(base["count"]), _ms(base["p50_ms"]),
             _ms(base["p99_ms"]), "-", fmt_int(base["lost"])]
        )  # fmt: skip
    for name in _names(calls):
        p = found[name]["probe"]
        rows.append(
            [_label(data, name), fmt_int(found[name]["background_msgs_s"]), fmt_int(p["count"]),
             _ms(p["p50_ms"]), _ms(p["p99_ms"]), _range(p.get("p99_rounds_ms")),
             fmt_int(p["lost"])]
        )  # fmt: skip
    return Table(
        "Added latency: round trip client -> relay -> echo peer -> relay -> client",
        ["path", "background msgs/s", "probes", "RTT p50", "RTT p99", "p99 per round", "lost"],
        rows,
        f"100 B ChannelData, one in flight, at most {PROBE_RATE:.0f}/s, from the load core; "
        f"per server pooled over {_rounds(calls)} (a fresh server and load each, the servers "
        "taking turns); 'p99 per round' is the lowest and highest of the rounds' own p99. The "
        "floor is measured once, with no load; the relay's added latency is its RTT minus the "
        "floor.",
    )


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = data.get("calls", {}).get("servers", {})
    if "stunnerd" not in found or "coturn" not in found:
        return []
    s, c = found["stunnerd"], found["coturn"]
    r = ratio(s["idle"]["per_cpu_s"], c["idle"]["per_cpu_s"])
    sp, cp = s["probe"]["p99_ms"], c["probe"]["p99_ms"]
    return [
        {
            "name": "call setups per CPU-second (with CreatePermission), stunnerd / coturn",
            "target": ">= 1.0x",
            "value": fmt_ratio(r),
            "met": None if r is None else r >= 1.0,
        },
        {
            "name": "relay RTT p99 at half the knee, stunnerd vs coturn",
            "target": "<= coturn's",
            "value": f"{_ms(sp)} vs {_ms(cp)} ({s['probe']['count']:,} vs "
            f"{c['probe']['count']:,} probes; rounds {_range(s['probe'].get('p99_rounds_ms'))} "
            f"vs {_range(c['probe'].get('p99_rounds_ms'))})",
            "met": None if sp is None or cp is None else sp <= cp,
        },
    ]


DOC = """\
- **Call setup.** The allocation driver does what a browser does per call: 401, authenticated
  Allocate, CreatePermission, ChannelBind, from its own source address. With the server alone
  on its core and 64 setups in flight, setups per server CPU-second (2,000 at the start of each
  round, pooled: all setups over all the CPU they took); then one setup at a time
  (first request to last answer, p50 and p99) while uclient relays a background load at half
  of the lowest knee of the run, the same for every server (10,000 messages/s when the
  saturation section did not run).
- **Added latency.** Under the same background load, a probe sends numbered 100 B ChannelData
  messages over one allocation, one in flight, at most 500 a second, and times each echo
  (client -> relay -> echo peer -> relay -> client); an echo later than 200 ms counts as lost.
  The same probe straight to the echo peer, with no load, is the floor; the relay adds the
  difference.
- **Rounds.** A p99 needs many samples, and a shared machine has noisy minutes. The setup
  latency and the round trip are therefore timed in rounds (3 in the full plan, 2 with
  `--quick`): each round starts every server afresh under a fresh background load, the servers
  taking turns, and times 1,000 probes and 200 setups per server (500 and 100 with `--quick`).
  The tables pool the rounds (3,000 probes: the p99 is the 30th-largest round trip) and give
  the lowest and highest of the rounds' own p99 as the spread. With `--baseline GITREF`,
  stunnerd from that commit takes its turn in every round too (before and after, side by side).
"""
