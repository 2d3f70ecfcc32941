"""A real WebRTC stack through stunnerd: headless Chromium, two relay-only peer connections in
one page, over TURN/UDP, TURN/TCP and TURNS (a data channel each), then a 10 s video call.

Truth: the page's own counts (every echo back, in order), getStats() of the selected candidate
pairs, and two packet captures (the browser's veth, stunnerd's relay-to-relay traffic on lo).
See e2e/browser/truth.py for which relations are exact and which margins are stated, and why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import contract as c
from e2e import truth as gauges_truth
from e2e.browser import truth
from e2e.browser.capture import read_pcap, settled, tcpdump_binary
from e2e.browser.chromium import chromium_binary
from e2e.browser.netns import netns_unavailable_reason
from e2e.browser.report import BrowserReport, Setup, plot_call
from e2e.browser.session import (
    ROLE,
    SIDES,
    Session,
    external_session,
    listener_name,
    local_session,
)
from e2e.checks import Checker, Expect, Recorder, Scope
from e2e.contract import RX, TX, Key
from e2e.report import RunInfo
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MESSAGES = 100  # per data channel, each echoed
SIZE = 600  # bytes per message
CALL_SECONDS = 10
TIMEOUT = 15  # seconds for a call to come up or its echoes to return
DATA_TRANSPORTS = ("udp", "tcp", "tls")


@pytest.fixture(scope="module")
def report(reportdir: Path, run_info: RunInfo) -> Iterator[BrowserReport]:
    rep = BrowserReport()
    try:
        yield rep
    finally:
        if rep.setups or rep.call:
            rep.write(reportdir)
            run_info.notes.extend(rep.notes())
            run_info.notes.append("browser calls: see browser.md")


@pytest.fixture(scope="module")
def browser(
    target: Target,
    pytestconfig: pytest.Config,
    reportdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Session]:
    """Namespace, gateway `i`, captures and Chromium for the module; all torn down by pid.

    On the external target (with --browser): Chromium only, aimed at the deployment.
    """
    if target.lab is None and not pytestconfig.getoption("--browser"):
        pytest.skip("browser scenario: pass --browser to aim Chromium at this target")
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium not on PATH (apt-get install chromium)")
    if target.lab is None:
        logdir = reportdir / "logs"
        logdir.mkdir(exist_ok=True)
        cafile = pytestconfig.getoption("--turn-ca")
        with external_session(target, binary, logdir, cafile) as session:
            yield session
        return
    if tcpdump_binary() is None:
        pytest.skip("tcpdump not on PATH (apt-get install tcpdump)")
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(f"browser scenario: {reason}")
    with local_session(target.lab, binary, tmp_path_factory.mktemp("browser")) as session:
        yield session


def _gauges(session: Session, transports: tuple[str, ...], up: bool) -> dict[Key, Expect]:
    """Each listener's three gauges: its legs while the calls are up, 0 after pc.close()."""
    legs: dict[str, int] = {}
    for t in transports:
        for side in SIDES:
            name = session.servers[listener_name(t, side)].name
            legs[name] = legs.get(name, 0) + 1
    out: dict[Key, Expect] = {}
    for name, count in legs.items():
        value, why = (count, "one allocation per peer connection") if up else (0, "all closed")
        out |= gauges_truth.gauges(name, value, why)
    return out


def _check_calls(
    check: Checker,
    session: Session,
    results: dict[str, dict[str, Any]],
    since: float,
    closed: float,
) -> None:
    """Candidates, then every counter of each call's listeners against the three truths.

    Call after the calls ended and a scrape saw that: the captures are read once, complete.
    """
    queries: truth.Queries = {}
    captured = session.net and session.lo_pcap and session.veth_pcap
    if captured:
        assert session.net and session.lo_pcap and session.veth_pcap
        host = session.net.host_addr
        lo, veth = settled(session.lo_pcap), settled(session.veth_pcap)
    for transport, result in results.items():
        for fact, want, got in truth.candidate_facts(transport, result):
            check.expect_true(
                f"{transport} {fact}", "getStats() selected candidate pair", want == got, want, got
            )
        legs = truth.legs(transport, result, session.servers)
        if not captured:
            queries |= truth.shared_listener(check.scope, legs, since)
            continue
        queries |= truth.exact_from_capture(check.scope, legs, lo, veth, host)
        queries |= truth.relay_to_relay(check.scope, legs, lo, host)
        queries |= truth.from_browser(check.scope, legs)
        queries |= truth.connections(check.scope, legs, 1)
    check.expect_values(queries, after=closed)


def _scope(target: Target) -> Scope:
    return target.lab.scope(ROLE) if target.lab is not None else target.scope


def _setup(session: Session, transport: str, result: dict[str, Any], done_ms: float) -> Setup:
    first = (result["firstRelay"]["a"], result["firstRelay"]["b"])
    udp = session.servers[listener_name(transport, SIDES[0])].protocol == "UDP"
    again = _retransmissions(session, transport) if udp and session.veth_pcap else None
    return Setup(transport, dict(zip(SIDES, first, strict=True)), done_ms, again)


def test_data_channels(
    browser: Session, target: Target, recorder: Recorder, report: BrowserReport
) -> None:
    transports = tuple(t for t in DATA_TRANSPORTS if listener_name(t, SIDES[0]) in browser.servers)
    check = Checker(
        _scope(target), f"browser: data channel, {MESSAGES} x {SIZE} B echoed, per transport",
        recorder,
    )  # fmt: skip
    start = time.time() if browser.net else check.snapshot().at  # as in test_video_call
    results = {t: browser.data_channel(t, MESSAGES, SIZE, TIMEOUT) for t in transports}
    check.fresh()  # a scrape while every allocation is up
    browser.hang_up()
    closed = time.time()
    for t, r in results.items():
        got = f"{r['echoed']} echoed, {r['echoedBytes']} B, {r['wrong']} wrong"
        want = f"{MESSAGES} echoed, {MESSAGES * SIZE} B, 0 wrong"
        check.expect_true(
            f"{t}: every message echoed, in order", "the page's counts", got == want, want, got
        )
        report.setups.append(_setup(browser, t, r, r["openMs"]))
    check.expect_absolute(_gauges(browser, transports, up=False), after=closed)
    # Evaluated now, not at `closed`: the 250 ms subquery grid needs a step after the scrape.
    check.expect_max(start, time.time(), _gauges(browser, transports, up=True))
    _check_calls(check, browser, results, start, closed)
    check.assert_all()


def _retransmissions(session: Session, transport: str) -> int:
    assert session.veth_pcap is not None
    veth = read_pcap(session.veth_pcap)
    return sum(
        truth.signaling_requests(veth, session.servers[listener_name(transport, side)])[1]
        for side in SIDES
    )


def test_udp_setup_without_stun_retransmission(
    browser: Session, target: Target, recorder: Recorder
) -> None:
    """Over UDP, every TURN request is answered the first time: stunnerd's listener saw one
    frame per distinct request (listener rx - cluster tx = the signaling frames)."""
    if "udp" not in browser.results or browser.veth_pcap is None:
        pytest.skip("needs test_data_channels' UDP call and the local target's capture")
    scope = _scope(target)
    check = Checker(scope, "browser: UDP setup without a STUN retransmission", recorder)
    veth = read_pcap(browser.veth_pcap)
    queries = {}
    for side in SIDES:
        server = browser.servers[listener_name("udp", side)]
        distinct, again = truth.signaling_requests(veth, server)
        check.expect_true(
            f"capture: STUN retransmissions to {server.name}",
            "veth capture: requests whose transaction id was already sent",
            again == 0,
            "0",
            str(again),
        )
        rx = truth.metric(scope, c.LISTENER_PACKETS, server.name, RX)
        tx = truth.metric(scope, c.CLUSTER_PACKETS, server.name, TX)
        queries[f"signaling frames {server.name}"] = (
            f"{rx} - {tx}",
            Expect.exact(distinct, "one frame per distinct request (veth capture)"),
        )
    check.expect_values(queries, settle=0)  # the listeners are idle: the values are final
    check.assert_all()


def test_video_call(
    browser: Session, target: Target, recorder: Recorder, report: BrowserReport, reportdir: Path
) -> None:
    if listener_name("video", SIDES[0]) not in browser.servers:
        pytest.skip("the video call needs a TURN/UDP listener")
    scope = _scope(target)
    check = Checker(scope, f"browser: video call, {CALL_SECONDS} s over TURN/UDP", recorder)
    # The local listeners are the call's own (counters from 0); a deployment's need a baseline.
    start = time.time() if browser.net else check.snapshot().at
    r = browser.video_call(CALL_SECONDS, TIMEOUT)
    closed = float(r["closedAt"])
    media = _media(r)
    report.setups.append(_setup(browser, "video", r, r["connectedMs"]))
    report.call = {"media seconds": round(r["mediaUntil"] - r["mediaFrom"], 2), **media}
    check.expect_true(
        "media flowed both ways for the whole call",
        "getStats() inbound-rtp (video frames decoded, audio packets received per side)",
        r["mediaUntil"] - r["mediaFrom"] >= CALL_SECONDS and all(v > 0 for v in media.values()),
        f">= {CALL_SECONDS} s, every figure > 0",
        ", ".join(f"{k} {v:g}" for k, v in media.items()),
    )
    check.expect_absolute(_gauges(browser, ("video",), up=False), after=closed)
    check.expect_max(start, time.time(), _gauges(browser, ("video",), up=True))
    _check_calls(check, browser, {"video": r}, start, closed)
    names = sorted({browser.servers[listener_name("video", s)].name for s in SIDES})
    report.plot = plot_call(
        reportdir, scope.prom, scope.selector, names, float(r["startedAt"]), time.time()
    )
    check.assert_all()


def _media(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for side, key in zip(SIDES, "ab", strict=True):
        rtp = result["stats"][key].get("rtp", [])
        inbound = {s["kind"]: s for s in rtp if s["type"] == "inbound-rtp"}
        out[f"{side} video frames decoded"] = float(
            inbound.get("video", {}).get("framesDecoded") or 0
        )
        out[f"{side} audio packets received"] = float(
            inbound.get("audio", {}).get("packetsReceived") or 0
        )
    return out


def test_nothing_left_the_browser_namespace(
    browser: Session, target: Target, recorder: Recorder
) -> None:
    """Every packet on the namespace's only link is TURN between the browser and stunnerd."""
    if browser.net is None or browser.veth_pcap is None:
        pytest.skip("the external target's browser runs on this host's network")
    check = Checker(_scope(target), "browser: nothing but TURN left the namespace", recorder)
    net = browser.net
    ports = {s.port for s in browser.servers.values()}
    veth = read_pcap(browser.veth_pcap)

    def allowed(p: Any) -> bool:
        if p.proto == "arp":
            return True  # the link's own address resolution
        if {p.src, p.dst} != {net.ns_addr, net.host_addr}:
            return False
        if p.proto == "other":
            return not p.multicast  # ICMP port unreachable for a late datagram after close
        server_port = p.dport if p.dst == net.host_addr else p.sport
        return p.proto in ("udp", "tcp") and server_port in ports and not p.multicast

    stray = [p.describe() for p in veth if not allowed(p)]
    turn = sum(1 for p in veth if p.proto in ("udp", "tcp"))
    check.expect_true(
        "every packet on the veth is TURN between the browser and stunnerd",
        f"tcpdump -i {net.host_if} (all packets)",
        not stray and turn > 0,
        "none stray, some TURN",
        f"{len(stray)} stray ({'; '.join(stray[:5])}), {turn} TURN",
    )
    routes = net.routes()
    check.expect_true(
        "the namespace has no route beyond its link",
        f"ip -n {net.namespace} route",
        routes == [f"{net.ns_addr.rsplit('.', 1)[0]}.0/30"],
        f"{net.ns_addr.rsplit('.', 1)[0]}.0/30 only",
        ", ".join(routes),
    )
    check.assert_all()
