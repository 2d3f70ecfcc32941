"""The bench's /proc parsing, on a fake /proc tree (exact values, no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import procstat


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, state: str = "S") -> str:
    # Fields 3.. of a real line; only state (3), ppid (4), utime (14), stime (15) matter here.
    rest = [state, str(ppid), "1", "1", "0", "-1", "4194560", "100", "0", "0", "0"]
    rest += [str(utime), str(stime), "7", "8", "20", "0", "1", "0", "5000", "123456", "789"]
    return f"{pid} ({comm}) " + " ".join(rest) + "\n"


def fake_proc(tmp_path: Path, entries: list[tuple[int, str, int, int, int]]) -> Path:
    for pid, comm, ppid, utime, stime in entries:
        directory = tmp_path / str(pid)
        directory.mkdir()
        (directory / "stat").write_text(stat_line(pid, comm, ppid, utime, stime))
        (directory / "status").write_text(f"Name:\t{comm}\nVmRSS:\t   {pid * 100} kB\n")
    (tmp_path / "self").mkdir()  # non-numeric entries are skipped
    return tmp_path


def test_parse_stat_with_spaces_and_parentheses_in_comm() -> None:
    stat = procstat.parse_stat(stat_line(4242, "py (x) y", 17, 1234, 567, "R"))
    assert stat == procstat.ProcStat(4242, "py (x) y", "R", 17, 1234, 567)
    assert stat.ticks == 1801


def test_parse_stat_rejects_truncated_lines() -> None:
    with pytest.raises(ValueError, match="no '\\)'"):
        procstat.parse_stat("12 (python S 1 2")
    with pytest.raises(ValueError, match="fields"):
        procstat.parse_stat("12 (python) S 1 2 3")


def test_cpu_of_a_process_and_of_its_tree(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        [
            (1, "init", 0, 5, 5),
            (10, "stunnerd", 1, 100, 50),
            (11, "worker a", 10, 30, 20),
            (12, "worker b", 10, 7, 3),
            (13, "grandchild", 11, 1, 1),
            (20, "coturn", 1, 900, 900),
        ],
    )
    assert procstat.cpu_ticks(10, proc=proc) == 150
    assert procstat.cpu_ticks(10, with_children=True, proc=proc) == 150 + 50 + 10 + 2
    assert procstat.cpu_split(10, with_children=True, proc=proc) == (138, 74)
    assert procstat.tree(10, procstat.all_stats(proc)) == [10, 11, 12, 13]
    assert procstat.cpu_ticks(99, proc=proc) == 0  # gone: counts nothing
    assert procstat.cpu_seconds(20, proc=proc) == 1800 / procstat.CLK_TCK


def test_rss_of_a_process_and_of_its_tree(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [(1, "init", 0, 0, 0), (10, "a", 1, 0, 0), (11, "b", 10, 0, 0)])
    assert procstat.rss_bytes(10, proc=proc) == 1000 * 1024
    assert procstat.rss_bytes(10, with_children=True, proc=proc) == 2100 * 1024


def test_parse_rss_needs_a_vmrss_line() -> None:
    assert procstat.parse_rss_kib("Name:\tx\nVmRSS:\t  31337 kB\nVmSwap:\t0 kB\n") == 31337
    with pytest.raises(ValueError, match="VmRSS"):
        procstat.parse_rss_kib("Name:\tkthreadd\n")


def test_cpu_model_from_cpuinfo() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
    assert procstat.parse_cpu_model(cpuinfo + cpuinfo) == "AMD EPYC 7B13"
    assert procstat.parse_cpu_model("processor\t: 0\nHardware\t: BCM2835\n") == "BCM2835"
    assert procstat.parse_cpu_model("processor\t: 0\n") == "unknown"


def test_socket_buffers_from_ss() -> None:
    from bench.servers import parse_skmem

    out = (
        "UNCONN 0      0         127.0.0.12:3479      0.0.0.0:*\n"
        "\t skmem:(r0,rb4194304,t0,tb212992,f0,w0,o0,bl0,d0)\n"
    )
    assert parse_skmem(out) == (4194304, 212992)
    assert parse_skmem("") is None


def test_udp_counters_from_snmp() -> None:
    snmp = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 1000 3 17 990 17 0\n"
        "UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n"
    )
    counters = procstat.parse_udp_snmp(snmp)
    assert counters["RcvbufErrors"] == 17
    assert counters["InDatagrams"] == 1000
    with pytest.raises(ValueError, match="Udp"):
        procstat.parse_udp_snmp("Ip: a\nIp: 1\n")
