"""What the metrics of one browser call must show, from three truths.

1. **The packet captures** (exact). On `lo`, every datagram between the two relays: cluster tx
   of a listener is exactly what left its allocation's relay port. On the veth, every datagram
   between the browser and a UDP listener: listener rx and tx, packets and bytes, exactly.
2. **The relay-to-relay relation.** What the caller's relay sent is what the callee's relay
   received, less the datagrams that arrived before the callee's allocation had a permission
   for the relay address (dropped and not counted, RFC 8656 section 11.3: early ICE checks)
   or after it was released (what the far side's close() sends once this side hung up).
3. **The browser's getStats()** of the selected candidate pair, within a margin: libwebrtc
   counts application packets (DTLS, SCTP, SRTP) in packetsSent, and answered ICE checks in
   requestsSent/responsesSent; it leaves out the checks it sent before the first answer, and
   the packets pc.close() sends after the last getStats() (SCTP ABORT, DTLS close_notify).
   On the receiving side it counts only what reached the selected pair, so cluster rx lies
   between what this side counted and what the other side sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e2e import contract as c
from e2e.browser.capture import Flow, Packet, udp_flow
from e2e.browser.session import SIDES, TurnServer, listener_name
from e2e.checks import Expect, Scope
from e2e.contract import RX, TX

# Datagrams a sender relays that its own getStats() does not count: unanswered early checks
# (1-3 seen) and what pc.close() sends after the last getStats() (0-2 seen).
UNCOUNTED = 5
# Datagrams that reach the far relay before its permission exists (early ICE checks) or after
# its allocation was released (the far side's close packets): 0-3 seen.
BEFORE_PERMISSION = 6
STUN_MIN, STUN_MAX = 20, 200  # bytes of the smallest and largest uncounted datagram
MEDIA_MAX = 1500  # bytes of the largest datagram a call relays (Chromium keeps under the MTU)
# TURN requests a TCP/TLS client sends on one call: Allocate twice (401 challenge),
# CreatePermission, ChannelBind, Refresh; a refresh timer may add one (5 seen).
STREAM_SIGNALING = (4, 8)

Queries = dict[str, tuple[str, Expect]]


def metric(scope: Scope, family: c.Family, name: str, direction: str = "") -> str:
    matchers = [f'name="{name}"'] + ([f'direction="{direction}"'] if direction else [])
    return f"sum({family.name}{scope.sel(*matchers)})"


@dataclass(frozen=True)
class Leg:
    """One peer connection of a call: its listener, its relay port, its getStats()."""

    server: TurnServer
    relay_port: int
    pair: dict[str, Any]

    @property
    def sent(self) -> int:
        p = self.pair
        return int(p["packetsSent"] + p["requestsSent"] + p["responsesSent"])

    @property
    def received(self) -> int:
        p = self.pair
        return int(p["packetsReceived"] + p["requestsReceived"] + p["responsesReceived"])

    @property
    def stun(self) -> int:
        return int(self.pair["requestsSent"] + self.pair["responsesSent"])


def legs(transport: str, result: dict[str, Any], servers: dict[str, TurnServer]) -> list[Leg]:
    """The caller's (page side `a`) and the callee's (`b`) legs."""
    out = []
    for side, key in zip(SIDES, "ab", strict=True):
        stats = result["stats"][key]
        out.append(
            Leg(servers[listener_name(transport, side)], int(stats["local"]["port"]), stats["pair"])
        )
    return out


def candidate_facts(transport: str, result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(check, expected, got) about the selected pair: relay on both ends, over `transport`."""
    want_proto = {"udp": "udp", "video": "udp", "tcp": "tcp", "tls": "tls"}[transport]
    facts = []
    for side, key in zip(SIDES, "ab", strict=True):
        stats = result["stats"][key]
        if "error" in stats:
            facts.append((f"{side}: selected pair", "present", stats["error"]))
            continue
        got = (
            f"{stats['local']['candidateType']}/{stats['local']['relayProtocol']} -> "
            f"{stats['remote']['candidateType']}, nominated {stats['pair']['nominated']}"
        )
        want = f"relay/{want_proto} -> relay, nominated True"
        facts.append((f"{side}: selected pair", want, got))
    return facts


def _exact_flow(
    out: Queries, scope: Scope, families: tuple[c.Family, c.Family], name: str, direction: str,
    flow: Flow, why: str,
) -> None:  # fmt: skip
    """Packets and bytes of one series pair, exactly as a capture counted them."""
    kind = families[0].name.split("_")[1]  # listener | cluster
    packets, octets = families
    out[f"capture: {kind} {direction} packets {name}"] = (
        metric(scope, packets, name, direction),
        Expect.exact(flow.packets, why),
    )
    out[f"capture: {kind} {direction} bytes {name}"] = (
        metric(scope, octets, name, direction),
        Expect.exact(flow.bytes, why),
    )


def exact_from_capture(
    scope: Scope, leg_list: list[Leg], lo: list[Packet], veth: list[Packet], host: str
) -> Queries:
    """Cluster tx of each leg from the lo capture; UDP listener frames from the veth capture."""
    out: Queries = {}
    cluster = (c.CLUSTER_PACKETS, c.CLUSTER_BYTES)
    listener = (c.LISTENER_PACKETS, c.LISTENER_BYTES)
    for leg in leg_list:
        name = leg.server.name
        sent = udp_flow(lo, src=(host, leg.relay_port))
        why = f"datagrams from relay port {leg.relay_port} (lo capture)"
        _exact_flow(out, scope, cluster, name, TX, sent, why)
        if leg.server.protocol != "UDP":
            continue
        port = (host, leg.server.port)
        to_listener, from_listener = udp_flow(veth, dst=port), udp_flow(veth, src=port)
        why = f"datagrams to {host}:{leg.server.port} (veth capture)"
        _exact_flow(out, scope, listener, name, RX, to_listener, why)
        why = f"datagrams from {host}:{leg.server.port} (veth capture)"
        _exact_flow(out, scope, listener, name, TX, from_listener, why)
    return out


def relay_to_relay(scope: Scope, leg_list: list[Leg], lo: list[Packet], host: str) -> Queries:
    """Cluster rx of one leg = what the other leg's relay sent, less pre-permission drops."""
    out: Queries = {}
    for leg, other in (leg_list, leg_list[::-1]):
        sent = udp_flow(lo, src=(host, other.relay_port))
        why = f"sent by {other.server.name}'s relay, less early checks and late close packets"
        out[f"relay-to-relay: cluster rx packets {leg.server.name}"] = (
            metric(scope, c.CLUSTER_PACKETS, leg.server.name, RX),
            Expect.between(max(0, sent.packets - BEFORE_PERMISSION), sent.packets, why),
        )
        out[f"relay-to-relay: cluster rx bytes {leg.server.name}"] = (
            metric(scope, c.CLUSTER_BYTES, leg.server.name, RX),
            Expect.between(max(0, sent.bytes - BEFORE_PERMISSION * MEDIA_MAX), sent.bytes, why),
        )
    return out


def from_browser(scope: Scope, leg_list: list[Leg]) -> Queries:
    """Cluster series against getStats() of the selected pairs, within the stated margins."""
    out: Queries = {}
    for leg, other in (leg_list, leg_list[::-1]):
        name = leg.server.name
        sent_bytes = int(leg.pair["bytesSent"])
        out[f"browser: cluster tx packets {name}"] = (
            metric(scope, c.CLUSTER_PACKETS, name, TX),
            Expect.between(
                leg.sent, leg.sent + UNCOUNTED, "packetsSent + requestsSent + responsesSent "
                f"(+ up to {UNCOUNTED} early checks and close packets)",
            ),
        )  # fmt: skip
        out[f"browser: cluster tx bytes {name}"] = (
            metric(scope, c.CLUSTER_BYTES, name, TX),
            Expect.between(
                sent_bytes + leg.stun * STUN_MIN,
                sent_bytes + (leg.stun + UNCOUNTED) * STUN_MAX,
                f"bytesSent + checks of {STUN_MIN}-{STUN_MAX} B",
            ),
        )
        out[f"browser: cluster rx packets {name}"] = (
            metric(scope, c.CLUSTER_PACKETS, name, RX),
            Expect.between(
                leg.received, other.sent + UNCOUNTED,
                "at least what this side counted, at most what the other side sent",
            ),
        )  # fmt: skip
        if leg.server.protocol == "UDP":
            continue
        # No frame count on the wire for streams: relayed frames plus signaling frames.
        lo_sig, hi_sig = STREAM_SIGNALING
        for direction, low, high, why in (
            (RX, leg.sent, leg.sent, "cluster tx + TURN requests"),
            (TX, leg.received, other.sent, "cluster rx + TURN answers"),
        ):
            out[f"browser: listener {direction} packets {name}"] = (
                metric(scope, c.LISTENER_PACKETS, name, direction),
                Expect.between(low + lo_sig, high + UNCOUNTED + hi_sig, why),
            )
    return out


def delta(scope: Scope, family: c.Family, name: str, direction: str, since: float) -> str:
    """Counter increase since `since` (a deployment's counters do not start at 0)."""
    now = metric(scope, family, name, direction)
    return f"{now} - {now.removesuffix(')')} @ {since:.3f})"


def shared_listener(scope: Scope, leg_list: list[Leg], since: float) -> Queries:
    """Both legs on one listener (the external target): its series are their sums.

    Cluster tx lies within the senders' counts plus what getStats() leaves out; cluster rx
    is at least what both sides counted received, and at most what both relays sent.
    """
    name = leg_list[0].server.name
    sent = sum(leg.sent for leg in leg_list)
    received = sum(leg.received for leg in leg_list)
    slack = UNCOUNTED * len(leg_list)
    tx = delta(scope, c.CLUSTER_PACKETS, name, TX, since)
    rx = delta(scope, c.CLUSTER_PACKETS, name, RX, since)
    why_tx = "both sides' packetsSent + requestsSent + responsesSent (+ uncounted)"
    return {
        f"browser: cluster tx packets {name}": (tx, Expect.between(sent, sent + slack, why_tx)),
        f"browser: cluster rx packets {name}": (
            rx,
            Expect.between(received, sent + slack, "counted received .. sent by both relays"),
        ),
        f"relay-to-relay: cluster rx - tx {name}": (
            f"({rx}) - ({tx})",
            Expect.between(
                -BEFORE_PERMISSION * len(leg_list), 0, "early checks and late close packets"
            ),
        ),
        f"connections {name}": (
            delta(scope, c.CLUSTER_CONNECTIONS_TOTAL, name, "", since),
            Expect.exact(len(leg_list), "one allocation per peer connection"),
        ),
    }


def connections(scope: Scope, leg_list: list[Leg], value: int) -> Queries:
    """One allocation (UDP: one 5-tuple; TCP/TLS: one connection) per leg, ever."""
    out: Queries = {}
    for leg in leg_list:
        for fam in (c.LISTENER_CONNECTIONS_TOTAL, c.CLUSTER_CONNECTIONS_TOTAL):
            out[f"{fam.name} {leg.server.name}"] = (
                metric(scope, fam, leg.server.name),
                Expect.exact(value, "one allocation per peer connection"),
            )
    return out


def signaling_requests(veth: list[Packet], server: TurnServer) -> tuple[int, int]:
    """(distinct STUN requests, retransmissions) the browser sent to a UDP listener."""
    requests = [
        p.stun_request()
        for p in veth
        if p.proto == "udp" and (p.dst, p.dport) == (server.host, server.port)
    ]
    ids = [r[1] for r in requests if r is not None]
    return len(set(ids)), len(ids) - len(set(ids))
