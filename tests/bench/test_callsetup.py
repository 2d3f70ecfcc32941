"""The calls section's pure logic: rounds pooled with their spread, the contenders (with
``--baseline``), and tables and verdicts that say how many samples they stand on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import callsetup, report
from bench.driver import DriveResult
from bench.latency import Probe, percentile_ms, pooled, spread


def ms(*values: float) -> list[float]:
    return [v / 1000 for v in values]


def test_pooled_probes_keep_every_sample_and_every_loss() -> None:
    one, two = Probe(ms(1, 2), lost=1), Probe(ms(3), lost=2)
    both = pooled([one, two])
    assert both.rtts == ms(1, 2, 3)
    assert both.lost == 3
    assert pooled([]).to_json() == {"count": 0, "lost": 0, "p50_ms": None, "p99_ms": None}


def test_spread_is_the_lowest_and_highest_round_percentile() -> None:
    rounds = [ms(*range(1, 101)), ms(*range(101, 201)), []]
    assert spread(rounds, 99) == (99.0, 199.0)
    assert spread(rounds, 50) == (50.0, 150.0)
    assert spread([[], []], 99) is None
    assert percentile_ms([0.0012345], 50) == 1.234  # rounded to the microsecond


def test_timing_json_pools_rounds_and_counts_samples() -> None:
    # 200 samples pooled: the p99 is the 198th (nearest rank), not either round's own p99.
    rounds = [ms(*range(1, 101)), ms(*range(1001, 1101))]
    out = callsetup.timing_json(rounds)
    assert out == {
        "samples": 200,
        "p50_ms": 100.0,
        "p99_ms": 1098.0,
        "p50_rounds_ms": (50.0, 1050.0),
        "p99_rounds_ms": (99.0, 1099.0),
    }


def drive_result(*seconds: float, failed: int = 0) -> DriveResult:
    return DriveResult(len(seconds) + failed, len(seconds), failed, durations=list(seconds))


def test_summary_pools_probes_and_setups() -> None:
    probes = [Probe(ms(1, 3), lost=1), Probe(ms(2, 4))]
    setups = [drive_result(0.001, failed=2), drive_result(0.002, 0.003)]
    out = callsetup.summary(probes, setups)
    assert out["probe"]["count"] == 4
    assert out["probe"]["samples"] == 4
    assert out["probe"]["lost"] == 1
    assert (out["probe"]["p50_ms"], out["probe"]["p99_ms"]) == (2.0, 4.0)
    assert out["probe"]["p99_rounds_ms"] == (3.0, 4.0)
    assert [r["count"] for r in out["probe"]["rounds"]] == [2, 2]
    assert out["loaded"]["completed"] == 3
    assert out["loaded"]["failed"] == 2
    assert out["loaded"]["samples"] == 3
    assert out["loaded"]["p99_ms"] == 3.0
    assert out["loaded"]["p99_rounds_ms"] == (1.0, 3.0)


class FakeBench:
    def __init__(self, baseline: Path | None) -> None:
        self.baseline = baseline

    def stunnerd(self) -> None: ...

    def coturn(self) -> None: ...

    def pion(self) -> None: ...

    def baseline_stunnerd(self) -> None: ...


def test_the_baseline_takes_its_turn_only_with_baseline() -> None:
    assert [n for n, _ in callsetup.contenders(FakeBench(None))] == list(report.SERVERS)
    with_base = callsetup.contenders(FakeBench(Path("/tmp/x")))
    assert [n for n, _ in with_base] == [*report.SERVERS, "baseline"]


def server_entry(p99: float, rounds: tuple[float, float], count: int) -> dict[str, Any]:
    timing = {"p50_ms": 0.2, "p99_ms": p99, "p99_rounds_ms": rounds}
    return {
        "background_msgs_s": 20_000,
        "idle": {"per_cpu_s": 4_000.0, "failed": 0, "rounds_per_cpu_s": [3_800.0, 4_250.0]},
        "probe": {"count": count, "samples": count, "lost": 1, **timing},
        "loaded": {"completed": 600, "samples": 600, "failed": 0, **timing},
    }


def calls_data() -> dict[str, Any]:
    return {
        "baseline": {"ref": "main", "commit": "32d6071abcdef"},
        "calls": {
            "rounds": 3,
            "floor": {"count": 3000, "lost": 0, "p50_ms": 0.08, "p99_ms": 0.13},
            "servers": {
                "baseline": server_entry(1.5, (1.2, 1.9), 3000),
                "coturn": server_entry(1.14, (1.0, 1.3), 3000),
                "stunnerd": server_entry(1.1, (0.9, 1.25), 2999),
            },
        },
    }


def test_latency_table_shows_counts_and_spread() -> None:
    table = callsetup.latency_table(calls_data())
    assert table.rows == [
        ["direct to the peer (floor)", "-", "3,000", "0.08 ms", "0.13 ms", "-", "0"],
        ["stunnerd", "20,000", "2,999", "0.20 ms", "1.10 ms", "0.90-1.25 ms", "1"],
        ["coturn", "20,000", "3,000", "0.20 ms", "1.14 ms", "1.00-1.30 ms", "1"],
        ["stunnerd at main (32d6071)", "20,000", "3,000", "0.20 ms", "1.50 ms", "1.20-1.90 ms",
         "1"],
    ]  # fmt: skip
    assert "pooled over 3 rounds" in table.note


def test_setup_table_shows_counts_and_spread() -> None:
    table = callsetup.setup_table(calls_data())
    assert table.rows[0] == [
        "stunnerd", "4,000", "3,800-4,250", "1.00x", "0", "20,000", "600", "0.20 ms", "1.10 ms",
        "0.90-1.25 ms",
    ]  # fmt: skip
    assert [row[0] for row in table.rows] == ["stunnerd", "coturn", "stunnerd at main (32d6071)"]


def test_rtt_target_compares_pooled_p99_and_names_the_samples() -> None:
    targets = {t["name"]: t for t in callsetup.targets(calls_data())}
    rtt = targets["relay RTT p99 at half the knee, stunnerd vs coturn"]
    assert rtt["met"] is True
    assert rtt["value"] == (
        "1.10 ms vs 1.14 ms (2,999 vs 3,000 probes; rounds 0.90-1.25 ms vs 1.00-1.30 ms)"
    )


def test_baseline_label_names_the_commit_once() -> None:
    data = {"baseline": {"ref": "32d6071", "commit": "32d6071abcdef"}}
    assert callsetup._label(data, "baseline") == "stunnerd at 32d6071"
    assert callsetup._label(data, "coturn") == "coturn"


def test_the_setup_rate_pools_every_round_by_cpu_not_by_mean() -> None:
    rounds = [
        DriveResult(requested=2000, completed=2000, wall_s=0.4, server_cpu_s=0.25),
        DriveResult(requested=2000, completed=1998, failed=2, wall_s=0.5, server_cpu_s=0.5),
    ]
    out = callsetup.pooled_rate(rounds)
    assert out["completed"] == 3998
    assert out["failed"] == 2
    assert out["server_cpu_s"] == 0.75
    assert out["per_cpu_s"] == round(3998 / 0.75, 1)  # 5,330.7; the mean of ratios is 5,998
    assert out["rounds_per_cpu_s"] == [8000.0, 3996.0]


def test_a_row_without_round_rates_shows_a_dash() -> None:
    data = calls_data()
    del data["calls"]["servers"]["stunnerd"]["idle"]["rounds_per_cpu_s"]
    assert callsetup.setup_table(data).rows[0][2] == "-"
