"""Expectations from client-side truth: what each metric must show for the traffic we drove."""

from __future__ import annotations

from e2e import contract as c
from e2e.checks import Expect
from e2e.clients import Tally
from e2e.contract import RX, TX, Key


def counters(t: Tally) -> dict[Key, Expect]:
    """Counter increases for one listener.

    Exact: connections (one per UDP allocation / TCP or TLS connection), relay sockets, and
    the cluster side (payloads relayed to the peer and echoes relayed back). Listener rx is
    exact too (every frame the client put on the wire reaches stunnerd on loopback). Listener tx
    may exceed what the client read by the answers to retransmitted requests that arrive after
    the client stopped listening: a margin the client knows (retransmits x largest answer).
    """
    n, w, d = t.name, t.wire, t.data
    margin_bytes = w.retransmits * w.max_rx_stun
    return {
        Key(c.LISTENER_CONNECTIONS_TOTAL.name, n): Expect.exact(t.connections, "clients"),
        Key(c.CLUSTER_CONNECTIONS_TOTAL.name, n): Expect.exact(t.allocations, "allocations"),
        Key(c.CLUSTER_PACKETS.name, n, TX): Expect.exact(d.tx_packets, "payloads sent"),
        Key(c.CLUSTER_PACKETS.name, n, RX): Expect.exact(d.rx_packets, "echoes received"),
        Key(c.CLUSTER_BYTES.name, n, TX): Expect.exact(d.tx_bytes, "payload bytes sent"),
        Key(c.CLUSTER_BYTES.name, n, RX): Expect.exact(d.rx_bytes, "echo bytes received"),
        Key(c.LISTENER_PACKETS.name, n, RX): Expect.exact(w.tx_packets, "frames sent"),
        Key(c.LISTENER_BYTES.name, n, RX): Expect.exact(w.tx_bytes, "frame bytes sent"),
        Key(c.LISTENER_PACKETS.name, n, TX): Expect.between(
            w.rx_packets, w.rx_packets + w.retransmits, "frames received (+ retransmit answers)"
        ),
        Key(c.LISTENER_BYTES.name, n, TX): Expect.between(
            w.rx_bytes, w.rx_bytes + margin_bytes, "frame bytes received (+ retransmit answers)"
        ),
    }


def gauges(name: str, value: int, why: str = "") -> dict[Key, Expect]:
    """The three gauges of one listener (UDP: one connection per allocation)."""
    return {
        Key(fam.name, name): Expect.exact(value, why)
        for fam in (c.LISTENER_CONNECTIONS, c.CLUSTER_CONNECTIONS, c.ALLOCATIONS_ACTIVE)
    }


def zero_counters(name: str, families: tuple[c.Family, ...]) -> dict[Key, Expect]:
    return {
        key: Expect.exact(0, "nothing may be relayed")
        for fam in families
        for key in c.keys_for(fam, name)
    }
