"""Expectations from client-side truth: what each metric must show for the traffic we drove."""

from __future__ import annotations

from e2e import clauses
from e2e import contract as c
from e2e.checks import Expect
from e2e.clients import Tally
from e2e.contract import RX, TX, Key


def counters(t: Tally) -> dict[Key, Expect]:
    """Counter increases for one listener, all exact.

    Connections (one per UDP allocation / TCP or TLS connection), relay sockets and the
    cluster side (payloads relayed to the peer and answers relayed back) are counted by the
    client. Listener rx is every frame the client put on the wire (on loopback each reaches
    stunnerd). Listener tx is every frame the client read, plus the answers to its last
    request's retransmissions that came after it closed (`Wire.unanswered`): an answer the
    amplification guard withheld is not sent and must not be counted (DESIGN.md 1.3).
    Over TCP/TLS such a late answer meets a closed connection: it may or may not count.
    """
    n, w, d = t.name, t.wire, t.data
    late = w.late_answers
    stream = t.protocol != "udp"
    late_lo = 0 if stream else late
    # A late answer's size is unknown: between a bare header and the largest answer seen.
    late_bytes = (late_lo * 20, late * max(w.max_rx_stun, 200))
    frames = clauses.STREAM_FRAMES if stream else ""
    udp_conn = "" if stream else clauses.UDP_CONNECTION
    return {
        Key(c.LISTENER_CONNECTIONS_TOTAL.name, n): Expect.exact(t.connections, "clients", udp_conn),
        Key(c.CLUSTER_CONNECTIONS_TOTAL.name, n): Expect.exact(t.allocations, "allocations"),
        Key(c.CLUSTER_PACKETS.name, n, TX): Expect.exact(d.tx_packets, "payloads sent"),
        Key(c.CLUSTER_PACKETS.name, n, RX): Expect.exact(d.rx_packets, "answers received"),
        Key(c.CLUSTER_BYTES.name, n, TX): Expect.exact(d.tx_bytes, "payload bytes sent"),
        Key(c.CLUSTER_BYTES.name, n, RX): Expect.exact(d.rx_bytes, "answer bytes received"),
        Key(c.LISTENER_PACKETS.name, n, RX): Expect.exact(w.tx_packets, "frames sent", frames),
        Key(c.LISTENER_BYTES.name, n, RX): Expect.exact(w.tx_bytes, "frame bytes sent"),
        Key(c.LISTENER_PACKETS.name, n, TX): Expect.between(
            w.rx_packets + late_lo,
            w.rx_packets + late,
            f"frames received (+{late} late answers)",
            clauses.TX_LEFT,
        ),
        Key(c.LISTENER_BYTES.name, n, TX): Expect.between(
            w.rx_bytes + late_bytes[0],
            w.rx_bytes + late_bytes[1],
            f"frame bytes received (+{late} late answers)",
            clauses.TX_LEFT,
        ),
    }


def gauges(name: str, value: int, why: str = "", protocol: str = "") -> dict[Key, Expect]:
    """The three gauges of one listener (UDP: one connection per allocation)."""
    udp = clauses.UDP_CONNECTION if protocol == "udp" else ""
    return {
        Key(fam.name, name): Expect.exact(value, why, udp if fam is c.LISTENER_CONNECTIONS else "")
        for fam in (c.LISTENER_CONNECTIONS, c.CLUSTER_CONNECTIONS, c.ALLOCATIONS_ACTIVE)
    }


def zero_counters(name: str, families: tuple[c.Family, ...], clause: str = "") -> dict[Key, Expect]:
    return {
        key: Expect.exact(0, "nothing may be relayed", clause)
        for fam in families
        for key in c.keys_for(fam, name)
    }


def appear_at_zero(name: str, protocol: str) -> dict[Key, Expect]:
    """Every series of a new listener, at 0 (DESIGN.md 1.2); a UDP listener's connection
    series are also the UDP-connection clause's (upstream counts its socket there)."""
    out = {}
    for fam in c.ALL:
        clause = clauses.SERIES_AT_ZERO
        if protocol == "udp" and fam in (c.LISTENER_CONNECTIONS, c.LISTENER_CONNECTIONS_TOTAL):
            clause = clauses.UDP_CONNECTION
        for key in c.keys_for(fam, name):
            out[key] = Expect.exact(0, "a new listener starts at 0", clause)
    return out
