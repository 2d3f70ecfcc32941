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


HOW = """\
## TCP and TLS client legs

The same uclient load runs with the client's leg over TCP (`-t`) and TLS (`-t -S`, which does
not verify the server's certificate); the relay leg to the peer stays UDP, so relayed datagrams
are counted as on UDP. Both servers serve TCP on their UDP port and TLS on a port of its own,
with one self-signed certificate made by `openssl` (`bench/certs.py`). stunnerd's bench config
lifts `tcp_connections_per_source` (uclient opens 2N connections from one address; coturn caps
none). The TLS loads are paced (10 clients, `-z 2`): uclient's TLS reader falls behind a server
that answers at once (unpaced, it counted 6-12% of the echoes, for coturn as for stunnerd), and
with many clients it draws TLS 1.0/1.1 for some, which stunnerd's OpenSSL defaults refuse. A
paced load means about one message per wake-up on each leg, so the TLS figures are dominated by
what one event-loop turn costs, for both servers. `--profile` also profiles one TCP load (1
allocation, unpaced) and one TLS load (as above): py-spy's summary on stunnerd, and perf on
both servers (`bench-results/profile-tcp.txt`, `profile-tls.txt` hold py-spy's stacks).
"""

WHERE_THE_TIME_GOES = """\
### TCP and TLS client legs

Per relayed datagram, the kernel costs stunnerd and coturn about the same on TCP and TLS, as
on UDP (profile run of 2026-12-03, perf: TCP 100 B, 1 allocation, 4.0 us against 4.3 us; TLS
100 B, 10 paced clients, 23.5 us against 21.8 us). The gap is user space: CPython's
interpreter and allocator (TCP 2.8 us per datagram, TLS 19 us) against about 1 us of
turnserver, libevent and libc for coturn. OpenSSL itself costs both servers about the
same (libcrypto + libssl: 5.5 us for stunnerd, 4.1 us for coturn per TLS datagram).

Where the Python time goes, per wake-up:

- **Client to peer.** uvloop reads the connection and calls `data_received` (for TLS,
  `TlsServerProtocol.data_received` first decrypts with the ssl module's `MemoryBIO`);
  `StreamIngress.frames` cuts the frames and relays them. A read that is one ChannelData frame
  (smooth traffic) is relayed with one `sendto`; several frames to one peer leave as one
  `sendmmsg` from the batch memory they are copied into once.
- **Peer to client.** `RelayReceiver.drain` reads the relay socket with `recvmmsg`, writes each
  ChannelData header in place, and hands the run to `StreamClient`'s sender: padded to 4
  bytes, joined, and written with one TCP write (for TLS, encrypted as one record first).

uclient sends about 12,000 messages a second per client, so stunnerd sits at about 20% of a
core and most wake-ups carry one or a few frames: the fixed cost of a wake-up (the event loop's
callback, the method calls, a `recvmmsg` through ctypes on the relay side) is most of the
user-space time, and batching helps only when frames queue up. Instruction counts per relayed
100 B frame (`python -m bench.stream_instructions`: callgrind, user space, in process; before: the
same harnesses on the tree at 25836e8, `--stunner TREE/stunner`) before and after the
stream-path changes:

| path | before | after |
|---|---|---|
| TCP ingress, one frame per read | 13,700 | 10,900 |
| TCP ingress, 50 frames per read | 12,300 | 8,700 |
| TLS ingress (decrypt + relay), one record per read | 37,400 | 26,400 |
| TLS ingress, 20 records per read | 22,100 | 19,700 |
| TLS egress (relay socket to client), one frame per wake-up | 45,000 | 43,100 |
| TCP egress, one frame per wake-up | 29,700 | 29,700 |

The TLS ingress gain is the ssl module's `SSLWantReadError`: raised once per read to find
that the memory BIO was empty, it cost more than decrypting a small record; the records are
now read only while bytes are pending, into one shared buffer. What is left is mostly the
peer-to-client wake-up (about 30,000 instructions for one frame, 7,400 per frame at 20 per
wake-up), where `RelayReceiver.drain`'s fixed cost and the TLS record per wake-up dominate.
With one allocation there is nothing to merge across wake-ups (one relay socket feeds one
client), so the next thing to measure is that fixed cost itself, e.g. whether a wake-up with one
datagram waiting is cheaper with `recvfrom_into` than with `recvmmsg` through ctypes.
"""
