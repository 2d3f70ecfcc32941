"""The pure logic of the saturation, workers and call sections: plateau, knee search, drops,
percentiles, and the verdicts built from the JSON."""

from __future__ import annotations

from typing import Any

import pytest

from bench import callsetup, report, saturation
from bench.latency import channel_data, percentile, probe_payload
from bench.paced import (
    Plateau,
    Step,
    classify_drops,
    clients_for,
    combine,
    core_busy,
    drop_delta,
    parse_cpu_lines,
    parse_proc_net_udp,
    plateau,
    split_clients,
)

# plateau and offered rate


def test_plateau_keeps_the_intervals_at_the_top_rate() -> None:
    points = [
        (0.0, 0, 0),
        (1.0, 5_000, 5_000),  # ramp: 5,000/s
        (2.0, 15_000, 14_990),  # 10,000/s
        (3.0, 24_500, 24_400),  # 9,500/s: >= 90% of the top
        (4.0, 32_000, 31_900),  # 7,500/s: tail
    ]
    assert plateau(points) == Plateau(2.0, 19_500, 19_400)


def test_plateau_needs_two_intervals_with_traffic() -> None:
    assert plateau([(0.0, 0, 0), (1.0, 1000, 1000)]) is None
    assert plateau([(0.0, 0, 0), (1.0, 0, 0), (2.0, 0, 0)]) is None
    assert plateau([(0.0, 0, 0)]) is None


def test_plateau_skips_repeated_timestamps() -> None:
    points = [(0.0, 0, 0), (1.0, 1000, 1000), (1.0, 1000, 1000), (2.0, 2000, 1990)]
    assert plateau(points) == Plateau(2.0, 2000, 1990)


def test_combine_adds_rates_and_pools_loss() -> None:
    offered, loss = combine([Plateau(2.0, 20_000, 19_000), Plateau(1.0, 12_000, 12_000)])
    assert offered == 22_000.0  # 10,000/s + 12,000/s
    assert loss == pytest.approx(100 * 1000 / 32_000)
    assert combine([]) == (0.0, 0.0)


def test_clients_and_their_split_over_uclient_processes() -> None:
    assert clients_for(24_000) == 24
    assert clients_for(24_499) == 24
    assert clients_for(100) == 1
    assert split_clients(24) == [24]
    assert split_clients(60) == [20, 20, 20]
    assert split_clients(51) == [17, 17, 17]
    assert split_clients(52) == [18, 17, 17]


# cores and drops


PROC_STAT = """\
cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 100 0 50 400 0 0 0 0 0 0
cpu1 200 0 50 600 20 0 10 0 0 0
intr 12345
"""


def test_parse_cpu_lines_and_busy_share() -> None:
    before = parse_cpu_lines(PROC_STAT)
    assert before == {0: (150, 550), 1: (260, 880)}
    after = {0: (150 + 90, 550 + 100), 1: (260 + 25, 880 + 100)}
    assert core_busy(before, after) == {0: 0.9, 1: 0.25}


def udp_line(n: int, local: str, drops: int) -> str:
    """One /proc/net/udp row (the fields the parser skips hold placeholders)."""
    rest = "00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 1 2 0000000000000000"
    return f"  {n}: {local} {rest} {drops}"


PROC_NET_UDP = "\n".join(
    [
        "   sl  local_address rem_address   st tx_queue rx_queue ... drops",
        udp_line(1, "0B00007F:9C40", 120),
        udp_line(2, "0B00007F:4E21", 7),
        udp_line(3, "0D00007F:1F90", 3),
        udp_line(4, "0902007F:7531", 0),
    ]
)


class _Server:
    name = "stunnerd"
    host = "127.0.0.11"
    port = 40000

    def cpu_times(self) -> tuple[float, float]:
        return 0.0, 0.0


def test_parse_proc_net_udp_reads_drops_per_local_address() -> None:
    assert parse_proc_net_udp(PROC_NET_UDP) == {
        ("127.0.0.11", 40000): 120,
        ("127.0.0.11", 20001): 7,
        ("127.0.0.13", 8080): 3,
        ("127.0.2.9", 30001): 0,
    }


def test_drops_are_grouped_by_owner() -> None:
    before = {("127.0.0.11", 40000): 100, ("127.0.2.9", 30001): 5}
    after = {
        ("127.0.0.11", 40000): 130,
        ("127.0.0.11", 20001): 7,
        ("127.0.0.13", 8080): 3,
        ("127.0.2.9", 30001): 9,
        ("127.0.0.99", 1): 0,
    }
    delta = drop_delta(before, after)
    assert delta == {
        ("127.0.0.11", 40000): 30,
        ("127.0.0.11", 20001): 7,
        ("127.0.0.13", 8080): 3,
        ("127.0.2.9", 30001): 4,
    }
    assert classify_drops(delta, _Server(), ("127.0.0.13", 8080)) == {
        "server listener": 30,
        "server relays": 7,
        "peer": 3,
        "clients": 4,
    }


# the knee search


def fake(knee: float, generator_limit: float = 1e9, error_at: float = 1e9) -> Any:
    """A server that loses 5% above ``knee``; asked rates are recorded."""
    asked: list[float] = []

    def measure(rate: float) -> Step:
        asked.append(rate)
        step = Step("fake", rate, clients_for(rate))
        step.offered = min(rate, generator_limit)
        step.loss_pct = 5.0 if rate > knee else 0.0
        step.generator_cpu = 0.95 if rate >= generator_limit else 0.5
        step.error = "boom" if rate >= error_at else ""
        return step

    measure.asked = asked  # type: ignore[attr-defined]
    return measure


def test_find_knee_steps_up_overshoots_once_and_bisects() -> None:
    measure = fake(knee=50_000)
    search = saturation.find_knee(measure, 16_000, 1.5, 7, overload_steps=1, refine=1)
    assert measure.asked == [16_000, 24_000, 36_000, 54_000, 81_000, pytest.approx(44_090.8, 0.1)]
    assert search.knee is not None and search.knee.intended == pytest.approx(44_090.8, 0.1)
    assert search.first_lossy is not None and search.first_lossy.intended == 54_000
    assert search.limit == ""


def test_find_knee_lossy_bisection_lowers_the_first_lossy_step() -> None:
    measure = fake(knee=40_000)
    search = saturation.find_knee(measure, 16_000, 1.5, 7, overload_steps=0, refine=2)
    # 16k, 24k, 36k clean; 54k lossy; sqrt(36k*54k)=44.1k lossy; sqrt(36k*44.09k)=39.84k clean
    assert [round(r) for r in measure.asked] == [16_000, 24_000, 36_000, 54_000, 44_091, 39_841]
    assert search.knee is not None and round(search.knee.intended) == 39_841
    assert search.first_lossy is not None and round(search.first_lossy.intended) == 44_091


def test_find_knee_stops_at_the_load_generator() -> None:
    measure = fake(knee=1e9, generator_limit=30_000)
    search = saturation.find_knee(measure, 16_000, 1.5, 7)
    assert measure.asked == [16_000, 24_000, 36_000]
    assert search.limit == "load generator"
    assert search.knee is not None and search.knee.offered == 30_000


def test_find_knee_is_bounded_in_steps() -> None:
    measure = fake(knee=1e9)
    search = saturation.find_knee(measure, 1_000, 2.0, 3)
    assert measure.asked == [1_000, 2_000, 4_000]
    assert search.limit == "3 steps without loss"
    assert search.first_lossy is None


def test_find_knee_stops_on_an_error() -> None:
    measure = fake(knee=1e9, error_at=24_000)
    search = saturation.find_knee(measure, 16_000, 1.5, 7)
    assert measure.asked == [16_000, 24_000]
    assert search.limit == "error: boom"
    assert search.knee is not None and search.knee.intended == 16_000


def test_find_knee_lossy_from_the_start_has_no_knee() -> None:
    search = saturation.find_knee(fake(knee=1_000), 16_000, 1.5, 7, overload_steps=1)
    assert search.knee is None
    assert [s.intended for s in search.steps] == [16_000, 24_000]


# percentiles and probes


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0], 0) == 1.0


def test_probe_frames() -> None:
    payload = probe_payload(258, size=12)
    assert payload == b"\x00\x00\x01\x02pppppppp"
    assert channel_data(0x4000, payload) == b"\x40\x00\x00\x0c" + payload


# metrics and verdicts


METRICS = """\
# HELP stunner_cluster_packets_total datagrams
# TYPE stunner_cluster_packets_total counter
stunner_cluster_packets_total{direction="tx",name="bench/peer"} 100.0
stunner_cluster_packets_total{direction="rx",name="bench/peer"} 98.0
stunner_listener_packets_total{direction="rx",name="bench/udp"} 130.0
stunner_listener_packets_total{direction="rx",name="bench/udp2"} 5.0
stunner_listener_bytes_total{direction="rx",name="bench/udp"} 999.0
"""


def test_metrics_sums_per_metric_and_direction() -> None:
    assert saturation.metrics_sums(METRICS) == {
        "stunner_cluster_packets_total:tx": 100.0,
        "stunner_cluster_packets_total:rx": 98.0,
        "stunner_listener_packets_total:rx": 135.0,
    }


def steps_json(server: str, losses: dict[int, float], knee: int | None) -> dict[str, Any]:
    steps = []
    for rate, loss in losses.items():
        step = Step(server, rate, clients_for(rate))
        step.offered, step.loss_pct = rate, loss
        steps.append(step.to_json())
    knee_step = next((s for s in steps if s["intended"] == knee), None)
    return {"steps": steps, "knee": knee_step, "first_lossy": None, "limit": ""}


def sat_data() -> dict[str, Any]:
    return {
        "saturation": {
            "server_cores": [0],
            "load_cores": [1],
            "servers": {
                "stunnerd": steps_json(
                    "stunnerd", {16_000: 0.0, 24_000: 3.0, 36_000: 20.0}, 16_000
                ),
                "coturn": steps_json("coturn", {16_000: 0.0, 24_000: 0.5, 36_000: 10.0}, 24_000),
            },
        }
    }


def test_knee_ratio_and_overload_verdict() -> None:
    data = sat_data()
    assert saturation.knee_of(data, "stunnerd") == 16_000
    assert saturation.knee_of(data, "pion") is None
    value, met = saturation.overload_verdict(data)
    assert value == "24,000/s: 3.0% vs 0.5%; 36,000/s: 20.0% vs 10.0%"
    assert met is False
    targets = {t["name"]: t for t in saturation.targets(data)}
    knee = targets["saturation knee on one core, stunnerd / coturn"]
    assert (knee["value"], knee["met"]) == ("0.67x", False)


def test_saturation_tables_render() -> None:
    data = sat_data()
    knee = saturation.knee_table(data)
    assert [row[:2] for row in knee.rows] == [["stunnerd", "1"], ["coturn", "1"]]
    assert knee.rows[0][2] == "16,000" and knee.rows[0][6] == "0.67x"
    overload = saturation.overload_table(data)
    assert [row[:4] for row in overload.rows] == [
        ["1", "16,000", "0.00% (16,000)", "0.00% (16,000)"],
        ["1", "24,000", "3.00% (24,000)", "0.50% (24,000)"],
        ["1", "36,000", "20.00% (36,000)", "10.00% (36,000)"],
    ]
    assert report.render_table(overload, markdown=True).count("\n") == 4


def test_background_rate_is_half_the_lowest_knee() -> None:
    assert callsetup.background_rate(sat_data()) == 8_000
    assert callsetup.background_rate({}) == callsetup.FALLBACK_RATE


def test_workers_target_and_metrics_check() -> None:
    one = steps_json("stunnerd", {16_000: 0.0}, 16_000)
    two = steps_json("stunnerd", {20_000: 0.0, 26_000: 0.0}, 26_000)
    two["metrics"] = {
        "cluster_tx": 10, "peer_received": 10, "cluster_rx": 10, "peer_sent": 10, "exact": True,
    }  # fmt: skip
    data = {"workers": {"runs": {"1": one, "2": two}}}
    targets = {t["name"]: t for t in saturation.targets(data)}
    scale = targets["stunnerd --workers 2 knee / --workers 1 knee"]
    assert scale["value"].startswith("1.62x") and scale["met"] is False
    assert targets["metrics exact across 2 workers (cluster packets vs the peer)"]["met"] is True


def test_generator_bound_by_its_own_cpu_or_a_shortfall() -> None:
    step = Step("s", 10_000, 10)
    step.offered, step.generator_cpu, step.load_core_busy = 10_000, 0.5, 1.0
    assert not step.generator_bound  # a busy core alone (other work) does not count
    step.generator_cpu = 0.9
    assert step.generator_bound
    step.generator_cpu, step.offered = 0.5, 8_999
    assert step.generator_bound
    step.server_cpu, step.server_core_busy = 0.5, 0.8
    assert step.server_core_shared
