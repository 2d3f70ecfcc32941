"""TCP and TLS client legs: their loads' tables, targets, profile tables and the prose on them.

The client talks to the server over TCP (uclient ``-t``) or TLS (``-t -S``); the relay leg to
the peer stays UDP, so a relayed datagram is counted as on UDP (peer received + echoes uclient
received). uclient's TLS reader falls behind a server that answers faster than about one
frame per wake-up (at ``-z 0`` it counted 6-12% of the echoes, for coturn as for stunnerd, and
none of it is the server's loss), so the TLS loads are paced: ``TLS_INTERVAL_MS`` between
messages per client, with 10 clients. uclient also gives each of many TLS clients a random
protocol version, TLS 1.0 and 1.1 included, which stunnerd refuses (OpenSSL's defaults); at
10 clients the versions it draws are accepted, which is why the TLS loads stop there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import report
from .load import LoadSpec
from .profile import RATE, PySpy, summarize

if TYPE_CHECKING:
    from testkit.echo import EchoProcess

    from .run import Bench

TRANSPORTS = ("tcp", "tls")
TLS_INTERVAL_MS = 2
STREAM_TARGET = 1.0
# What ``--profile`` runs per client transport (the same in full and quick runs).
PROFILE_LOADS = {
    "tcp": LoadSpec(1, 100, 60_000, transport="tcp"),
    "tls": LoadSpec(10, 100, 2_000, TLS_INTERVAL_MS, transport="tls"),
}


def tables(data: dict[str, Any]) -> list[report.Table]:
    """Per transport: the throughput table, before/after (with --baseline) and the spread."""
    out: list[report.Table] = []
    for transport in TRANSPORTS:
        if not report.transport_runs(data, transport):
            continue
        out.append(report.throughput_table(data, transport))
        before_after = report.baseline_table(data, transport)
        if before_after is not None:
            out.append(before_after)
        out.append(report.spread_table(data, transport))
    return out


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """stunnerd / coturn per CPU-second >= 1.0x, per transport and payload size."""
    out = []
    for transport in TRANSPORTS:
        for size in (100, 1000):
            value = report.size_ratio(data, size, transport)
            if value is None and not report.transport_runs(data, transport):
                continue
            out.append(
                {
                    "name": f"stunnerd / coturn datagrams per CPU-second, {transport.upper()} "
                    f"clients, {size} B",
                    "target": f">= {STREAM_TARGET:.1f}x",
                    "value": report.fmt_ratio(value),
                    "met": None if value is None else value >= STREAM_TARGET,
                }
            )
    return out


def profile(bench: Bench, echo: EchoProcess) -> dict[str, Any]:
    """Per client transport: py-spy's summary on stunnerd, perf on stunnerd and coturn."""
    out: dict[str, Any] = {}
    for transport, spec in PROFILE_LOADS.items():
        label = label_of(spec)
        entry: dict[str, Any] = {"load": label, "rate": RATE, "perf": {}}
        raw = bench.out / f"profile-{transport}.txt"
        with bench.stunnerd() as stunnerd:
            spy = PySpy(stunnerd.pid, raw, "raw")
            bench.command(f"py-spy ({transport})", spy.argv)
            try:
                bench.load(stunnerd, echo, spec, on_traffic=spy.start, on_quiet=spy.stop)
            finally:
                spy.stop()
            entry["summary"] = summarize(raw.read_text()) if raw.exists() else {}
            entry["perf"]["stunnerd"] = bench.perf_profile(stunnerd, echo, spec)
        with bench.coturn() as coturn:
            if coturn is not None:
                entry["perf"]["coturn"] = bench.perf_profile(coturn, echo, spec)
        out[transport] = entry
    return out


def label_of(spec: LoadSpec) -> str:
    pacing = f", -z {spec.interval_ms}" if spec.interval_ms else ""
    allocations = f"{spec.allocations} allocation{'s' if spec.allocations > 1 else ''}"
    return f"{spec.transport.upper()} client, {spec.size} B, {allocations}{pacing}"


def profile_tables(profile: dict[str, Any]) -> list[report.Table]:
    """perf's and py-spy's tables for each profiled client transport."""
    out: list[report.Table] = []
    for transport in TRANSPORTS:
        entry = (profile.get("transports") or {}).get(transport)
        if not entry:
            continue
        entry = {**entry, "started_at": profile.get("started_at", "?")}
        label = entry.get("load", transport.upper())
        out += report.perf_tables(entry, label) + report.profile_tables(entry, label)
    return out


def markdown(profile: dict[str, Any]) -> str:
    """The TCP/TLS part of "Where stunnerd's time goes": the prose, then the tables."""
    tables = profile_tables(profile)
    if not tables:
        return ""
    parts = [WHERE_THE_TIME_GOES]
    for table in tables:
        parts.append(f"### {table.title}\n\n{report.render_table(table, markdown=True)}")
        parts.append(table.note)
    return "\n\n".join(parts)


WHERE_THE_TIME_GOES = """\
### TCP and TLS client legs

(analysis pending)
"""
