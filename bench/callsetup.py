"""Call setup and added latency, per server, with the server pinned to one core.

For each server: allocations per server CPU-second with nothing else running (the browser's
sequence: 401, Allocate, CreatePermission, ChannelBind; ``WINDOW`` setups in flight), then,
under a background relay load at half of the server's knee (``bench.saturation``), the latency
of one full setup (one at a time, so the driver's own queue is not measured) and the round
trip of a probe through the relay (``bench.latency``).
"""

from __future__ import annotations

from typing import Any

from testkit.echo import EchoProcess

from . import pinning
from .driver import WINDOW, AllocationDriver, DriveResult
from .latency import Probe, floor, percentile, probe
from .paced import clients_for, split_clients, uclients
from .report import SERVERS, Table, fmt_int, fmt_ratio, ratio
from .saturation import knee_of, pinned, say, servers

LOAD_SHARE = 0.5  # of the server's knee
FALLBACK_RATE = 10_000  # messages/s when no knee was measured in this run
PROBE_HOST = "127.0.3.1"
FLOOR_HOST = "127.0.3.2"
SETUPS = {"full": (2000, 300, 300), "quick": (500, 100, 100)}  # rate, latency, probes
PROBE_RATE = 200.0  # probes per second at most


def setup_json(result: DriveResult) -> dict[str, Any]:
    out = dict(result.to_json())
    for pct in (50, 99):
        value = percentile(result.durations, pct)
        out[f"p{pct}_ms"] = None if value is None else round(1000 * value, 3)
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


def run(bench: Any, echo: EchoProcess) -> None:
    say("== call setup and added latency (server on one core, background load at 50% knee)")
    rate_count, latency_count, probes = SETUPS[bench.data.get("mode", "full")]
    server_cores, load_cores = pinning.split(pinning.cores(), 1)
    out: dict[str, Any] = {"servers": {}, "load_share": LOAD_SHARE}
    bench.data["calls"] = out
    with pinned(echo, load_cores):
        out["floor"] = floor(echo.address, FLOOR_HOST, probes, PROBE_RATE).to_json()
        for name, factory in servers(bench):
            with factory() as server:
                if server is None:
                    continue
                pinning.pin_tree(server.pid, server_cores)
                entry: dict[str, Any] = {}
                entry["idle"] = setup_json(
                    drive(server, echo.address, bench.creds, rate_count, WINDOW, 0)
                )
                rate = background_rate(bench.data)
                entry["background_msgs_s"] = rate
                hosts = [bench.client_host() for _ in split_clients(clients_for(rate))]
                creds = (bench.creds.user, bench.creds.password)
                seconds = 8.0 + latency_count * 0.02 + probes / PROBE_RATE
                with uclients(server, creds, echo, rate, seconds, hosts):
                    entry["probe"] = relay_probe(server, echo, bench.creds, probes).to_json()
                    entry["loaded"] = setup_json(
                        drive(server, echo.address, bench.creds, latency_count, 1, 500_000)
                    )
                out["servers"][name] = entry
                say(
                    f"  {name:8s} setups {entry['idle']['per_cpu_s']:,.0f}/CPU-s; under "
                    f"{rate:,.0f} msgs/s: setup p50 {entry['loaded']['p50_ms']} ms p99 "
                    f"{entry['loaded']['p99_ms']} ms, RTT p50 {entry['probe']['p50_ms']} ms "
                    f"p99 {entry['probe']['p99_ms']} ms"
                )


def _names(calls: dict[str, Any]) -> list[str]:
    return [n for n in SERVERS if n in calls.get("servers", {})]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def setup_table(data: dict[str, Any]) -> Table:
    calls = data.get("calls", {})
    found = calls.get("servers", {})
    coturn = found.get("coturn", {}).get("idle", {}).get("per_cpu_s")
    rows = []
    for name in _names(calls):
        idle, loaded = found[name]["idle"], found[name]["loaded"]
        rows.append(
            [
                name,
                fmt_int(idle["per_cpu_s"]),
                fmt_ratio(ratio(idle["per_cpu_s"], coturn)) if name != "coturn" else "",
                fmt_int(idle["failed"]),
                fmt_int(found[name]["background_msgs_s"]),
                _ms(loaded["p50_ms"]),
                _ms(loaded["p99_ms"]),
                fmt_int(loaded["completed"]),
            ]
        )
    return Table(
        "Call setup: 401, Allocate, CreatePermission, ChannelBind",
        [
            "server",
            "setups /CPU-s",
            "x/coturn",
            "failed",
            "background msgs/s",
            "setup p50",
            "setup p99",
            "timed setups",
        ],
        rows,
        "setups /CPU-s: 64 in flight, nothing else running, server on one core. Setup p50/p99: "
        "one setup at a time (first request to last answer), under a background uclient load "
        "at half of the lowest knee, the same for every server.",
    )


def latency_table(data: dict[str, Any]) -> Table:
    calls = data.get("calls", {})
    found = calls.get("servers", {})
    base = calls.get("floor", {})
    rows = []
    if base:
        rows.append(["direct to the peer (floor)", "-", _ms(base["p50_ms"]), _ms(base["p99_ms"]),
                     fmt_int(base["lost"])])  # fmt: skip
    for name in _names(calls):
        p = found[name]["probe"]
        rows.append(
            [name, fmt_int(found[name]["background_msgs_s"]), _ms(p["p50_ms"]), _ms(p["p99_ms"]),
             fmt_int(p["lost"])]
        )  # fmt: skip
    return Table(
        "Added latency: round trip client -> relay -> echo peer -> relay -> client",
        ["path", "background msgs/s", "RTT p50", "RTT p99", "lost probes"],
        rows,
        f"{base.get('count', 0) + base.get('lost', 0)} probes of 100 B ChannelData, one in "
        f"flight, at most {PROBE_RATE:.0f}/s, from the load core; the relay's added latency is "
        "its RTT minus the floor.",
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
            "value": f"{_ms(sp)} vs {_ms(cp)}",
            "met": None if sp is None or cp is None else sp <= cp,
        },
    ]


DOC = """\
- **Call setup.** The allocation driver does what a browser does per call: 401, authenticated
  Allocate, CreatePermission, ChannelBind, from its own source address. With the server alone
  on its core and 64 setups in flight, setups per server CPU-second; then one setup at a time
  (first request to last answer, p50 and p99) while uclient relays a background load at half
  of the lowest knee of the run, the same for every server (10,000 messages/s when the
  saturation section did not run).
- **Added latency.** Under the same background load, a probe sends numbered 100 B ChannelData
  messages over one allocation, one in flight, at most 200 a second, and times each echo
  (client -> relay -> echo peer -> relay -> client); an echo later than 200 ms counts as lost.
  The same probe straight to the echo peer is the floor; the relay adds the difference.
"""
