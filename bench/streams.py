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

Per relayed datagram (perf, `--profile` run of 2026-12-03 20:00 UTC): TCP 100 B, 1
allocation, 3.17 us for stunnerd against 4.33 us for coturn. The kernel costs stunnerd less
(1.77 us against 3.63 us: a run of frames from the connection to one peer leaves as one
segmented send, UDP GSO), its user space more (CPython 0.98 us and libc against about 0.7 us of
turnserver, libevent and libc). TLS 100 B, 10 paced clients: 18.0 us against 15.8 us; kernel
10.3 us against 11.9 us, CPython 4.0 us against about 1.2 us of turnserver and libevent, and
OpenSSL (libcrypto + libssl) 1.5 us for both.

Where the Python time goes, per wake-up:

- **Client to peer.** uvloop reads the connection and calls `data_received` (for TLS,
  `TlsServerProtocol.data_received` first decrypts with the ssl module's `MemoryBIO`);
  `StreamIngress.frames` cuts the frames and relays them. A read that is one ChannelData frame
  (smooth traffic) is relayed with one `sendto`; several frames to one peer leave as one
  `sendmmsg` from the batch memory they are copied into once.
- **Peer to client.** `StreamEgress.drain` reads the relay socket with `recvmmsg`, makes each
  frame in its batch slot (the ChannelData header in front of the payload, the padding to 4
  bytes behind it), copies it out once and writes the wake-up's frames to the connection in
  one call that also checks the client's bound (`StreamClient.write_within`; for TLS,
  `TlsServerProtocol.send_within`: encrypted first, one record per frame, which it finds by
  the frames' headers). A wake-up of one datagram is one frame and one write, without lists.

uclient sends about 12,000 messages a second per client, so stunnerd sits at about 20% of a
core and most wake-ups carry one or a few frames: the fixed cost of a wake-up (the event loop's
callback, the method calls, a `recvmmsg` through ctypes on the relay side) is most of the
user-space time, and batching helps only when frames queue up. Instruction counts per relayed
100 B frame (`python -m bench.stream_instructions`: callgrind, user space, in process; before:
the same harnesses on the tree at 32d6071, `--stunner TREE/stunner`):

| path | before | after |
|---|---|---|
| TCP ingress, one frame per read | 10,844 | 10,808 |
| TCP ingress, 20 frames per read | 8,743 | 8,513 |
| TLS ingress (decrypt + relay), one record per read | 26,794 | 23,617 |
| TLS ingress, 20 records per read | 19,514 | 18,447 |
| TCP egress (relay socket to client), one frame per wake-up | 29,469 | 14,541 |
| TCP egress, 20 frames per wake-up | 8,438 | 7,283 |
| TLS egress, one frame per wake-up | 42,951 | 25,084 |
| TLS egress, 20 frames per wake-up | 9,510 | 8,191 |

The egress gain is the wake-up's fixed cost: `RelayReceiver.drain` with `StreamClient.run_sender`
built lists of starts and lengths, summed the padded lengths with a generator, and called a
closure that built a list of pieces, checked the bound through three transport calls (Python
calls each on the TLS transport) and joined. `StreamEgress` makes the frame in place and
writes it in one call; over TLS, `read`, `write` and `pending` are called on the C object
behind `ssl.SSLObject` (its methods only forward to it, a Python call each).

Measured and not taken: `asyncio.BufferedProtocol` (uvloop calls `get_buffer` and
`buffer_updated`, two Python calls per read, against one call and a small `bytes`: 13,490
against 12,990 instructions per 104-byte read through uvloop), and writing with
`socket.send` instead of the transport (1,474 against 1,235 instructions per 104-byte write).
With one allocation per client there is nothing to merge across wake-ups (one relay socket
feeds one client). What is left per TLS frame is OpenSSL's record (about 7,000 instructions to
decrypt one, 9,000 to encrypt one) and the two Python calls of each direction.

TLS on the socket itself (a non-blocking `ssl.SSLSocket`, read with `loop.add_reader` and
written with `send`, without the memory BIOs and uvloop's transport) was prototyped and not
taken. With real loopback sockets under uvloop, callgrind counted 10,683 against 14,223
instructions per 100 B frame out (one call encrypts and writes) but 90,142 against 91,157 in
(client included), and strace showed two `read` calls per record in against one per wake-up:
without read-ahead, which the ssl module cannot switch on, OpenSSL reads a record's 5-byte
header and then its body, so a wake-up with several records costs two system calls for each.
So the way in trades about 1,000 instructions for one more system call per record, and the
whole rewrite (accept, handshake timeout, close_notify, write bound, per-source gate) would
have bought about 4,500 of the 47,600 user-space instructions of a round trip, with user
space about half of stunnerd's CPU time per TLS datagram (the prototype, a throwaway script,
is not in the tree). `TlsServerProtocol.data_received` instead stops reading when a read
returned less than it asked for and no ciphertext waits, without the `pending()` call (every
call into the session releases and takes the GIL): 23,696 to 22,870 instructions per
one-record read.

A wake-up of several datagrams for one TLS client leaves in one write with a record per frame
(`TlsTransport.write_frames_within`); until this round the run was one record. uclient reads
one record per read event and takes it for one message, so a record of several frames was
lost echoes to it, although stunnerd had relayed (and paid for) them. In `nox -s bench --
--quick --only throughput --baseline 13ce428` stunnerd lost 0.0% of the TLS echoes, 13ce428
17.6% and coturn 12.3%; in three interleaved rounds of the paced load with 2,000 messages per
client, 0.0% each time against 9.3-12.5% (13ce428) and 8.4-14.5% (coturn). Frames queue when
stunnerd is held up (preempted on a shared machine, say), so the loss came and went with the
machine's load. The price is one encryption per frame when
they queue: 18,975 instructions per frame at 20 frames per wake-up against 8,183 with a record
per run; a wake-up of one frame is one record as before (24,710).
"""
