"""The external target: any STUNner-compatible deployment, upstream's Go stunnerd included.

Given TURN URIs named by listener (`--turn-uri NAME=turn:HOST:PORT?transport=udp`), the
credentials, the backend echo peer inside the cluster (`--peer`, e.g. turnutils_peer) and the
Prometheus that scrapes the gateway, the same traffic checks run as for the local target.
Scenarios that must reconfigure or restart the gateway skip here.
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

from e2e.checks import Scope
from e2e.clients import Address, Endpoint
from e2e.prom import PromClient
from e2e.targets.base import DEFAULT_OUTSIDE_PEER, Target


class TargetError(ValueError):
    """Bad external target options (the message says which)."""


def parse_host_port(text: str, what: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TargetError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_turn_uri(spec: str, tls_context: ssl.SSLContext | None) -> Endpoint:
    """`NAME=turn:HOST:PORT?transport=udp|tcp` or `NAME=turns:HOST:PORT` (TLS)."""
    name, sep, uri = spec.partition("=")
    if not sep or not name:
        raise TargetError(f"--turn-uri: expected NAME=URI, got {spec!r}")
    scheme, _, rest = uri.partition(":")
    if scheme not in ("turn", "turns"):
        raise TargetError(f"--turn-uri {name}: scheme must be turn or turns, got {scheme!r}")
    parts = urlsplit(f"//{rest}")
    transport = parse_qs(parts.query).get("transport", ["udp" if scheme == "turn" else "tcp"])[0]
    if parts.hostname is None or parts.port is None:
        raise TargetError(f"--turn-uri {name}: no host:port in {uri!r}")
    if scheme == "turns":
        if transport != "tcp":
            raise TargetError(f"--turn-uri {name}: turns: needs transport=tcp (no DTLS)")
        return Endpoint(name, "tls", parts.hostname, parts.port, tls_context)
    if transport not in ("udp", "tcp"):
        raise TargetError(f"--turn-uri {name}: transport must be udp or tcp")
    return Endpoint(name, transport, parts.hostname, parts.port)  # type: ignore[arg-type]


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """Verify against `cafile` if given; otherwise accept any certificate (say so)."""
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def external_target(
    *,
    turn_uris: list[str],
    username: str | None,
    password: str | None,
    peer: str | None,
    prometheus_url: str | None,
    selector: str = "",
    outside_peer: str | None = None,
    cafile: str | None = None,
    asymmetric_peer: str | None = None,
) -> Target:
    missing = [
        opt
        for opt, val in (
            ("--turn-uri", turn_uris),
            ("--turn-user", username),
            ("--turn-password", password),
            ("--peer", peer),
            ("--prometheus-url", prometheus_url),
        )
        if not val
    ]
    if missing:
        raise TargetError(f"--target external needs {', '.join(missing)}")
    assert username and password and peer and prometheus_url
    ctx = tls_context(cafile)
    endpoints = [parse_turn_uri(spec, ctx) for spec in turn_uris]
    listeners: dict[str, Endpoint] = {}
    for ep in endpoints:
        listeners.setdefault(ep.protocol, ep)
    matchers = ", ".join(
        m for m in (f'name=~"{"|".join(e.name for e in endpoints)}"', selector) if m
    )
    scope = Scope(
        prom=PromClient(prometheus_url),
        selector=selector,
        freshness=f"stunner_listener_connections_total{{{matchers}}}",
        match_target=f"{{{selector}}}" if selector else "",
        target_labels=frozenset(
            {"instance", "job", "namespace", "pod", "container", "endpoint", "service"}
        ),
    )
    notes = [] if cafile else ["TLS certificates not verified (no --turn-ca)"]
    return Target(
        kind="external",
        listeners=listeners,
        username=username,
        password=password,
        peer=parse_host_port(peer, "--peer"),
        scope=scope,
        outside_peer=(
            parse_host_port(outside_peer, "--outside-peer")
            if outside_peer
            else DEFAULT_OUTSIDE_PEER
        ),
        notes=notes,
        asymmetric_peer=(
            parse_host_port(asymmetric_peer, "--asymmetric-peer") if asymmetric_peer else None
        ),
    )
