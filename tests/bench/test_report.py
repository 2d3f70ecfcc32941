"""Table generation and target verdicts from the bench's JSON, and the parsers they rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.load import LoadResult, Sample, parse_progress, window
from bench.profile import frame_name, summarize
from bench.run import export_tree


def run(
    server: str, size: int, allocs: int, relayed_half: int, cpu: float, **kw: Any
) -> dict[str, Any]:
    """A run in the JSON's shape, built through LoadResult so the derived fields are real."""
    result = LoadResult(server, allocs, size, 1000, 0)
    result.sent = kw.get("sent", relayed_half)
    result.client_rx = relayed_half
    result.peer_rx = relayed_half
    result.window_s = kw.get("window", 2.0)
    result.cpu_s = cpu
    result.error = kw.get("error", "")
    return result.to_json()


def sample_data() -> dict[str, Any]:
    return {
        "mode": "full",
        "started_at": "2026-01-01 00:00 UTC",
        "elapsed_s": 300.0,
        "machine": {"nproc": 2, "cpu_model": "Test CPU"},
        "throughput": {
            "repeats": 2,
            "runs": [
                run("stunnerd", 100, 1, 60_000, 1.0),
                run("stunnerd", 100, 1, 60_000, 0.5),
                run("coturn", 100, 1, 60_000, 0.8, sent=62_000),
                run("coturn", 100, 1, 60_000, 0.7),
                run("stunnerd", 1000, 1, 50_000, 1.0),
                run("coturn", 1000, 1, 50_000, 0.5, error="timeout"),
            ],
        },
        "allocation_rate": {
            "stunnerd": {"completed": 1000, "per_cpu_s": 4000.0, "per_wall_s": 2000.0, "failed": 0},
            "coturn": {"completed": 1000, "per_cpu_s": 5000.0, "per_wall_s": 4000.0, "failed": 0},
        },
        "monitoring": {"cost_pct": 2.5, "runs": [], "off_per_cpu_s": 1.0, "on_per_cpu_s": 1.0},
        "memory": {
            "stunnerd": [
                {
                    "allocations": 10_000,
                    "rss_bytes": 60 * 2**20,
                    "per_alloc_bytes": 9000.0,
                    "scrape_ms_median": 12.0,
                    "scrape_ms_max": 20.0,
                    "idle_cpu_pct": 2.0,
                }
            ]
        },
        "workers": {"skipped": "no --workers yet"},
        "notes": ["a note"],
    }


def test_load_result_derives_rates_and_loss() -> None:
    result = run("stunnerd", 100, 1, 30_000, 0.5, sent=31_000, window=3.0)
    assert result["relayed"] == 60_000
    assert result["loss"] == 1_000
    assert result["loss_pct"] == pytest.approx(100 * 1000 / 31_000, abs=1e-3)
    assert result["per_cpu_s"] == 120_000.0
    assert result["per_wall_s"] == 20_000.0
    assert result["ok"] is True
    assert run("coturn", 100, 1, 0, 0.0)["ok"] is False


def test_aggregate_divides_totals_and_skips_failed_runs() -> None:
    data = sample_data()
    cells = {(c["size"], c["allocations"]): c for c in report.cells(data)}
    cell = cells[(100, 1)]
    assert cell["stunnerd"]["per_cpu_s"] == 240_000 / 1.5
    assert cell["stunnerd"]["min_per_cpu_s"] == 120_000.0
    assert cell["stunnerd"]["max_per_cpu_s"] == 240_000.0
    assert cell["coturn"]["per_cpu_s"] == pytest.approx(240_000 / 1.5)
    assert cell["coturn"]["loss_pct"] == pytest.approx(100 * 2000 / 122_000)
    assert cell["ratio"] == pytest.approx(1.0)
    assert cells[(1000, 1)]["coturn"] is None  # its only run failed
    assert cells[(1000, 1)]["ratio"] is None


def test_targets_get_exact_verdicts() -> None:
    data = sample_data()
    verdicts = [(t["value"], t["met"]) for t in report.evaluate_targets(data)]
    assert verdicts == [
        ("lowest 1.00x; 1 of 1 points", True),
        ("2.50%", True),
        ("8.79 KiB", False),
        ("12.0 ms", True),
    ]
    data["throughput"]["runs"] = [r for r in data["throughput"]["runs"] if r["server"] != "coturn"]
    del data["monitoring"]["cost_pct"]
    data["memory"] = {}
    verdicts = [t["met"] for t in report.evaluate_targets(data)]
    assert verdicts == [None, None, None, None]


def test_monitoring_verdict_falls_back_to_the_direct_estimate_only_within_noise() -> None:
    def verdict(cost: float, noise: float, direct: float) -> bool | None:
        mon = {"cost_pct": cost, "noise_pct": noise, "direct_pct": direct}
        return report.monitoring_verdict(mon)[1]

    assert verdict(1.0, 5.0, 9.0) is True  # below the target: met whatever the noise
    assert verdict(4.0, 5.0, 0.2) is True  # not resolved: the direct estimate decides
    assert verdict(4.0, 5.0, 3.5) is False
    assert verdict(8.0, 5.0, 0.2) is False  # resolved and above the target
    unresolved = {"cost_pct": 8.0, "noise_pct": None, "direct_pct": 0.2}
    assert report.monitoring_verdict(unresolved) == ("A/B 8.00% (noise +--), direct 0.20%", True)
    assert report.monitoring_verdict({"cost_pct": 2.0}) == ("2.00%", True)
    assert report.monitoring_verdict({}) == ("-", None)


def test_markdown_tables_are_generated_from_the_json() -> None:
    doc = report.render_markdown(sample_data())
    assert "| 100 B | 1 | stunnerd | 2 | 120,000 | 240,000 | 0 | 0 |" in doc
    assert (
        "| 100 B | 1 | 160,000 | 160,000 | 1.00x | 60,000 | 60,000 | 0.0% | 1.6% | 38% | 38% |"
        in doc
    )
    assert "| 1000 B | 1 | 100,000 | - | - | 50,000 | - | 0.0% | - | 50% | - |" in doc
    assert (
        "| stunnerd RSS per idle allocation (10,000 allocations) | < 8 KiB | 8.79 KiB | NOT met |"
        in doc
    )
    assert "| stunnerd | 10,000 | 60.0 MiB | 8.79 KiB | 12.0 ms | 20.0 ms | 2.00% |" in doc
    assert "stunnerd / coturn: 0.80x" in doc
    assert "| skipped |\n|---|\n| no --workers yet |" in doc
    assert "- a note" in doc


def test_text_table_is_aligned() -> None:
    table = report.Table("t", ["a", "long header"], [["wide cell", "1"]])
    assert report.render_table(table, markdown=False) == (
        "a          long header\n---------  -----------\nwide cell  1"
    )


def test_uclient_progress_lines() -> None:
    periodic = (
        "4: : start_mclient: msz=1, tot_send_msgs=2250, tot_recv_msgs=2200, "
        "tot_send_bytes ~ 225000, tot_recv_bytes ~ 220000"
    )
    assert parse_progress(periodic) == (2250, 2200)
    assert parse_progress("5: : start_mclient: tot_send_msgs=20000, tot_recv_msgs=19990") == (
        20000,
        19990,
    )
    assert parse_progress("0: : Total connect time is 0") is None


def test_window_brackets_the_traffic() -> None:
    samples = [
        Sample(0.0, 1.0, 0.5, 500),
        Sample(0.1, 1.2, 0.5, 500),  # set-up happened before this one
        Sample(0.2, 1.3, 0.6, 900),
        Sample(0.3, 1.5, 0.7, 1400),
        Sample(0.4, 1.6, 0.9, 1500),
        Sample(0.5, 1.6, 0.9, 1500),
    ]
    start, end = window(samples) or (None, None)
    assert start == samples[1]
    assert end == samples[4]
    assert end.cpu - start.cpu == pytest.approx(0.8)
    assert window(samples[:2]) is None  # no traffic at all


def test_profile_summary_counts_self_and_inclusive_samples() -> None:
    collapsed = (
        "run (asyncio/runners.py:118);datagram_received (stunner/listener.py:62) 30\n"
        "run (asyncio/runners.py:118);datagram_received (stunner/listener.py:70);"
        "forward_channel_data (stunner/listener.py:44) 50\n"
        "run (asyncio/runners.py:118);sock_sendto (socketmodule.c:4345) 15\n"
        "run (asyncio/runners.py:118);sendmsg (libc.so.6) 5\n"
        "run (asyncio/runners.py:118);uv__io_poll (linux.c:1452);epoll_pwait (libc.so.6) 70\n"
        "garbage line\n"
    )
    summary = summarize(collapsed)
    assert summary["samples"] == 100
    assert summary["idle_samples"] == 70
    assert {r["function"]: r["samples"] for r in summary["categories"]} == {
        "stunner Python code": 80,
        "native code (uvloop/libuv, CPython, extensions)": 15,
        "system calls (libc: sendmsg, recvmsg, ...)": 5,
    }
    assert summary["self"][0] == {
        "function": "forward_channel_data (stunner/listener.py)",
        "samples": 50,
        "pct": 50.0,
    }
    inclusive = {r["function"]: r["samples"] for r in summary["inclusive"]}
    assert "run (asyncio/runners.py)" not in inclusive  # on every stack: says nothing
    assert inclusive["datagram_received (stunner/listener.py)"] == 80
    assert frame_name("f (x.py:12)") == "f (x.py)"


def test_monitoring_cost_from_alternating_runs() -> None:
    from bench.run import monitoring_cost

    runs = [
        {**run("stunnerd", 100, 1, 50_000, 1.0), "metrics": False},
        {**run("stunnerd", 100, 1, 45_000, 1.0), "metrics": True},
        {**run("stunnerd", 100, 1, 55_000, 1.0), "metrics": True},
        {**run("stunnerd", 100, 1, 60_000, 1.0), "metrics": False},
    ]
    cost = monitoring_cost(runs, scrape_cpu_s=0.001)
    assert cost["off_per_cpu_s"] == 110_000
    assert cost["on_per_cpu_s"] == 100_000
    assert cost["cost_pct"] == pytest.approx(9.091, abs=1e-3)
    assert cost["noise_pct"] == pytest.approx(25.713, abs=1e-3)
    assert cost["direct_pct"] == pytest.approx(0.2, abs=1e-3)
    assert monitoring_cost(runs[:2], 0.001)["noise_pct"] is None  # one run a side


def test_perf_report_rows() -> None:
    from bench.profile import parse_perf_report

    text = (
        "# Samples: 2K of event 'cpu-clock'\n#\n# Overhead  Shared Object\n"
        "    72.29%  [kernel.kallsyms]\n    17.48%  libpython3.11.so.1.0\n\n"
        "     5.62%  [k] _raw_spin_unlock_irqrestore\n"
    )
    assert parse_perf_report(text) == [
        {"function": "[kernel.kallsyms]", "pct": 72.29},
        {"function": "libpython3.11.so.1.0", "pct": 17.48},
        {"function": "[k] _raw_spin_unlock_irqrestore", "pct": 5.62},
    ]
    perf = {"stunnerd": {"per_cpu_s": 125_000.0, "dso": parse_perf_report(text)[:2]}}
    tables = report.perf_tables({"perf": perf, "rate": 1000})
    assert report.render_table(tables[0], markdown=True).splitlines()[2] == (
        "| [kernel.kallsyms] | 72.29% | 5.78 |"  # of 8 us per datagram
    )


def test_commands_in_the_doc_are_portable() -> None:
    command = (
        "/work/main/.venv/bin/python3 -m stunner.cli.stunnerd -c "
        "/tmp/stunner-bench-ab12_x/01-stunnerd/stunnerd.json -w"
    )
    assert (
        report.portable(command)
        == "python -m stunner.cli.stunnerd -c $TMP/01-stunnerd/stunnerd.json -w"
    )
    assert report.portable("/usr/bin/turnserver -n") == "turnserver -n"


def test_baseline_table_compares_both_trees_from_the_same_run() -> None:
    data = sample_data()
    assert report.baseline_table(data) is None  # no --baseline: no table
    data["baseline"] = {"ref": "v1", "commit": "0123456789abcdef"}
    data["throughput"]["runs"] += [
        run("baseline", 100, 1, 45_000, 1.0),
        run("baseline", 100, 1, 45_000, 0.5),
    ]
    table = report.baseline_table(data)
    assert table is not None and "v1 (0123456789)" in table.title
    # before 180,000/1.5 s = 120,000; after 240,000/1.5 s = 160,000; coturn 240,000/1.5 s.
    assert table.rows[0] == ["100 B", "1", "120,000", "160,000", "1.33x", "0.75x", "1.00x"]
    assert table in report.tables(data)


def test_export_tree_writes_the_commit(tmp_path: Path) -> None:
    tree, commit = export_tree("HEAD", tmp_path / "tree")
    assert len(commit) == 40
    assert (tree / "stunner" / "__init__.py").is_file()
