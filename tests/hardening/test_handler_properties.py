"""Authenticated hostile requests: every request gets one well-formed answer, never a 500.

Random bytes never get past MESSAGE-INTEGRITY, so these requests are signed correctly (or
carry hostile credentials) and reach the method handlers with arbitrary attributes. A handler
exception would be caught by ``handle_stun`` and answered 500 with a logged traceback; both
count as failures here, as does any error the event loop reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stunner.auth import LongTermAuth, PlaintextAuth, long_term_key, rest_password
from stunner.config import LimitsConfig
from stunner.stats import ListenerStats
from stunner.stun import Class, Method, parse_message
from stunner.stun.message import message_type
from stunner.telemetry import listener_sample
from stunner.turn import DatagramClient, TurnServer
from tests.hardening.strategies import (
    VALUES,
    addresses,
    attribute_body,
    blobs,
    hostile_tlvs,
    texts,
    transaction_ids,
)
from tests.support import ErrorLog, sign_raw, tlv
from tests.unit.test_turn_server import REALM, FakeTransport

CLIENT = ("192.0.2.10", 40000)
ADMITTED = "127.0.0.254"  # loopback with nothing listening: relayed datagrams go nowhere
SECRET = "fuzz-secret"
RELAY_PORTS = (46000, 46999)

peers = st.one_of(st.tuples(st.just(ADMITTED), st.integers(1, 65535)), addresses)
# Typed attribute values the TURN handlers read, with peers biased towards the admitted one.
TYPED = {**VALUES, "XOR-PEER-ADDRESS": st.lists(peers, min_size=1, max_size=3)}
TURN_ATTRS = (
    "CHANNEL-NUMBER",
    "LIFETIME",
    "XOR-PEER-ADDRESS",
    "DATA",
    "REQUESTED-TRANSPORT",
    "REQUESTED-ADDRESS-FAMILY",
    "ADDITIONAL-ADDRESS-FAMILY",
    "EVEN-PORT",
    "DONT-FRAGMENT",
    "RESERVATION-TOKEN",
)


# TURN REST usernames: "<expiry>[:<user>]", with Unicode digits and absurd lengths.
long_term_names = st.one_of(
    st.text("0123456789:\u00b2\u0661", min_size=1, max_size=30),
    st.just("9" * 5000),
)


@dataclass
class Step:
    method: int
    klass: int
    typed: dict[str, Any]
    hostile: bytes
    username: str | None  # None: the valid username
    nonce: bytes | str | None  # None: a fresh nonce; str: a fresh stamp with this MAC
    good_key: bool
    fingerprint: bool
    transaction_id: bytes


@st.composite
def steps(draw: st.DrawFn) -> Step:
    method = draw(st.one_of(st.sampled_from(list(Method)), st.integers(0, 0xFFF)))
    names = draw(st.lists(st.sampled_from(TURN_ATTRS), unique=True, max_size=5))
    typed = {name: draw(TYPED[name]) for name in names}
    return Step(
        method=method,
        klass=draw(st.sampled_from([Class.REQUEST, Class.REQUEST, Class.INDICATION])),
        typed=typed,
        hostile=draw(st.one_of(st.just(b""), hostile_tlvs())),
        username=draw(st.none() | texts | long_term_names),
        nonce=draw(st.none() | blobs | texts),
        good_key=draw(st.booleans()),
        fingerprint=draw(st.booleans()),
        transaction_id=draw(transaction_ids),
    )


def make_server(longterm: bool, guard: bool = False) -> tuple[TurnServer, str, str]:
    if longterm:
        username = f"{int(time.time()) + 3600}:fuzz"
        auth: Any = LongTermAuth(REALM, SECRET)
        password = rest_password(SECRET, username)
    else:
        username, password = "user1", "pass1"
        auth = PlaintextAuth(REALM, username, password)
    server = TurnServer(
        "fuzz",
        ListenerStats(),
        auth,
        lambda ip: ip == ADMITTED,
        "127.0.0.1",
        *RELAY_PORTS,
        limits=LimitsConfig(udp_amplification_guard=guard),
    )
    return server, username, password


def nonce(server: TurnServer, spec: bytes | str | None) -> bytes:
    if spec is None:
        return server.auth.make_nonce()
    if isinstance(spec, str):
        return server.auth.make_nonce()[:8] + spec.encode()
    return spec


def encode(step: Step, server: TurnServer, username: str, password: str) -> bytes:
    from stunner.stun import Message

    msg = Message(step.method, step.klass, step.transaction_id)
    msg.attributes.update(step.typed)
    user = username if step.username is None else step.username
    msg.attributes["USERNAME"] = user
    msg.attributes["REALM"] = REALM
    msg.attributes["NONCE"] = nonce(server, step.nonce)
    body = attribute_body(msg) + step.hostile
    key = long_term_key(user, REALM, password if step.good_key else "wrong")
    return sign_raw(
        message_type(step.method, step.klass), step.transaction_id, body, key, step.fingerprint
    )


def parses(wire: bytes) -> bool:
    try:
        parse_message(wire)
    except ValueError:
        return False
    return True


async def answer(server: TurnServer, wire: bytes, endpoint: DatagramClient) -> list[bytes]:
    """Feed one message; the answers it got (every handler answers before returning)."""
    sent = endpoint.sock.sent  # type: ignore[attr-defined]
    before = len(sent)
    server.handle_stun(wire, endpoint)
    await asyncio.sleep(0)
    return [data for data, _ in sent[before:]]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps(), min_size=1, max_size=4), st.booleans(), st.booleans())
async def test_hostile_authenticated_requests_are_answered_not_crashed(
    sequence: list[Step], longterm: bool, guard: bool
) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    errors = ErrorLog()
    logging.getLogger("stunner").addHandler(errors)
    server, username, password = make_server(longterm, guard)
    endpoint = DatagramClient(FakeTransport(), CLIENT)  # type: ignore[arg-type]
    earned = spent = 0
    try:
        # Requests with a bad key or hostile credentials may legitimately get 401/438/400;
        # none may get a 500. Unparseable ones and indications are not answered; with the
        # amplification guard on, an unsigned answer may be dropped, never sent beyond credit.
        for step in sequence:
            wire = encode(step, server, username, password)
            answers = await answer(server, wire, endpoint)
            if step.klass != Class.REQUEST or not parses(wire):
                assert answers == []
                continue
            earned += len(wire)
            assert len(answers) <= 1
            if not answers:
                assert guard, f"no answer to {step!r}"
                continue
            response = parse_message(answers[0])
            assert response.transaction_id == step.transaction_id
            assert response.msg_class in (Class.SUCCESS, Class.ERROR)
            code = response.attributes.get("ERROR-CODE", (0, ""))[0]
            assert code != 500, f"500 for {step!r}"
            assert ("FINGERPRINT" in response.attributes) == step.fingerprint
            if "MESSAGE-INTEGRITY" not in response.attributes:
                spent += len(answers[0])
        if guard:  # nothing unsigned beyond what the source sent, plus its free allowance
            assert spent <= earned + server.guard.source_budget
        stats = listener_sample(server.stats, server.allocations.values(), 0)
        assert stats.tx_packets == len(endpoint.sock.sent)  # type: ignore[attr-defined]
        assert stats.allocations == len(server.allocations) == stats.cluster_connections
        assert stats.connections == stats.allocations <= 1
    finally:
        server.close()
        await asyncio.sleep(0)
        logging.getLogger("stunner").removeHandler(errors)
        loop.set_exception_handler(None)
    after = listener_sample(server.stats, server.allocations.values(), 0)
    assert after.allocations == 0 and after.connections == 0
    assert errors.messages() == []
    assert loop_errors == []


# Reproducers found by the fuzzers: credentials that crashed the auth path (500 + traceback).
CRASHERS = [
    pytest.param(False, "\u00e9", None, 401, id="plaintext-non-ascii-username"),
    pytest.param(False, None, "\u00e9", 438, id="plaintext-non-ascii-nonce-mac"),
    pytest.param(True, None, "\u00e9", 438, id="longterm-non-ascii-nonce-mac"),
    pytest.param(True, "\u00b2", None, 401, id="longterm-superscript-digit-expiry"),
    pytest.param(True, "9" * 5000, None, 401, id="longterm-5000-digit-expiry"),
]


@pytest.mark.parametrize(("longterm", "user", "nonce_spec", "expected"), CRASHERS)
async def test_hostile_credentials_get_an_error_not_a_500(
    longterm: bool, user: str | None, nonce_spec: str | None, expected: int
) -> None:
    server, username, password = make_server(longterm)
    endpoint = DatagramClient(FakeTransport(), CLIENT)  # type: ignore[arg-type]
    step = Step(Method.REFRESH, Class.REQUEST, {}, b"", user, nonce_spec, True, False, b"t" * 12)
    try:
        answers = await answer(server, encode(step, server, username, password), endpoint)
    finally:
        server.close()
    assert len(answers) == 1
    assert parse_message(answers[0]).attributes["ERROR-CODE"][0] == expected


def test_hostile_tlv_helper_pads() -> None:
    assert tlv(0x0013, b"abc") == b"\x00\x13\x00\x03abc\x00"
