"""stunner.config: defaults, aliases, validation messages, round trips, diff."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stunner import config as cfg
from stunner import constants as c

DATA = Path(__file__).parent / "data" / "config"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PEM_B64 = base64.b64encode(PEM).decode()


def base() -> dict[str, Any]:
    """A small valid config exercising every section."""
    return {
        "version": "v1alpha1",
        "admin": {"name": "d", "loglevel": "all:INFO", "metrics_endpoint": "http://:8080/m"},
        "auth": {"type": "plaintext", "credentials": {"username": "u", "password": "p"}},
        "listeners": [
            {"name": "l0", "protocol": "UDP", "port": 3478, "routes": ["c0"]},
            {"name": "l1", "protocol": "TCP", "port": 3479, "routes": ["c0"]},
        ],
        "clusters": [{"name": "c0", "type": "STATIC", "endpoints": ["10.0.0.0/8"]}],
    }


def minimal() -> dict[str, Any]:
    return {"version": "v1alpha1", "auth": {"credentials": {"username": "u", "password": "p"}}}


# ------------------------------------------------------------------------------------------
# Defaults and aliases


def test_defaults_of_a_minimal_config() -> None:
    assert cfg.from_dict(minimal()) == cfg.StunnerConfig(
        version="v1alpha1",
        admin=cfg.AdminConfig(
            name="default-stunnerd",
            loglevel="all:INFO",
            metrics_endpoint="",
            healthcheck_endpoint="http://:8086",
        ),
        auth=cfg.AuthConfig(
            type="plaintext", realm="stunner.l7mp.io", username="u", password="p", secret=""
        ),
        listeners=(),
        clusters=(),
    )


def test_listener_and_cluster_defaults() -> None:
    data = minimal() | {"listeners": [{"name": "l"}], "clusters": [{"name": "c"}]}
    conf = cfg.from_dict(data)
    assert conf.listeners == (
        cfg.ListenerConfig(
            name="l",
            protocol="UDP",
            address="0.0.0.0",
            port=3478,
            public_address="",
            public_port=0,
            min_relay_port=32768,
            max_relay_port=65535,
            cert=b"",
            key=b"",
            routes=(),
        ),
    )
    assert conf.clusters == (
        cfg.ClusterConfig(name="c", type="STATIC", protocol="udp", endpoints=()),
    )


@pytest.mark.parametrize(("text", "number"), [(None, None), ("", 0)])
def test_zero_values_mean_default(text: str | None, number: int | None) -> None:
    """Go's zero values (null, "", 0) select the default, as upstream."""
    lis = {"name": "l", "protocol": text, "address": text, "port": number}
    admin = {"name": text, "loglevel": text, "metrics_endpoint": text}
    conf = cfg.from_dict(minimal() | {"listeners": [lis], "admin": admin})
    assert (conf.listeners[0].protocol, conf.listeners[0].address) == ("UDP", "0.0.0.0")
    assert conf.listeners[0].port == 3478
    assert conf.admin == cfg.AdminConfig()


@pytest.mark.parametrize(
    ("health", "expected"),
    [(None, "http://:8086"), ("", None), ("http://127.0.0.1:9999", "http://127.0.0.1:9999")],
)
def test_healthcheck_endpoint(health: str | None, expected: str | None) -> None:
    conf = cfg.from_dict(minimal() | {"admin": {"healthcheck_endpoint": health}})
    assert conf.admin.healthcheck_endpoint == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plaintext", "plaintext"),
        ("static", "plaintext"),
        ("Static", "plaintext"),
        ("longterm", "longterm"),
        ("ephemeral", "longterm"),
        ("timewindowed", "longterm"),
    ],
)
def test_auth_type_aliases(raw: str, expected: str) -> None:
    creds = {"username": "u", "password": "p", "secret": "s"}
    conf = cfg.from_dict(minimal() | {"auth": {"type": raw, "credentials": creds}})
    assert conf.auth.type == expected
    # The credentials the type does not use are dropped.
    used = ("u", "p", "") if expected == "plaintext" else ("", "", "s")
    assert (conf.auth.username, conf.auth.password, conf.auth.secret) == used


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("udp", "UDP"),
        ("Tcp", "TCP"),
        ("TURN-UDP", "UDP"),
        ("turn-tcp", "TCP"),
        ("TURN-TLS", "TLS"),
        ("TURN-DTLS", "DTLS"),
        ("dtls", "DTLS"),
    ],
)
def test_listener_protocol_spellings(raw: str, expected: str) -> None:
    lis = {"name": "l", "protocol": raw, "cert": PEM_B64, "key": PEM_B64}
    assert cfg.from_dict(minimal() | {"listeners": [lis]}).listeners[0].protocol == expected


@pytest.mark.parametrize(("raw", "expected"), [("static", "STATIC"), ("Strict_DNS", "STRICT_DNS")])
def test_cluster_type_spellings(raw: str, expected: str) -> None:
    conf = cfg.from_dict(minimal() | {"clusters": [{"name": "c", "type": raw, "protocol": "UDP"}]})
    assert (conf.clusters[0].type, conf.clusters[0].protocol) == (expected, "udp")


def test_routes_and_endpoints_are_sorted_and_deduplicated() -> None:
    data = minimal() | {
        "listeners": [{"name": "l", "routes": ["b", "a", "b"]}],
        "clusters": [{"name": "c", "endpoints": ["10.0.0.2", "10.0.0.1", "10.0.0.2"]}],
    }
    conf = cfg.from_dict(data)
    assert conf.listeners[0].routes == ("a", "b")
    assert conf.clusters[0].endpoints == ("10.0.0.1", "10.0.0.2")


def test_legacy_min_port_max_port_keys() -> None:
    """Upstream's v0.14 example config spells the relay range min_port/max_port."""
    lis = {"name": "l", "min_port": 40000, "max_port": 40010}
    conf = cfg.from_dict(minimal() | {"listeners": [lis]})
    assert (conf.listeners[0].min_relay_port, conf.listeners[0].max_relay_port) == (40000, 40010)


def test_cert_and_key_are_decoded_pem() -> None:
    wrapped = "\n".join(PEM_B64[i : i + 16] for i in range(0, len(PEM_B64), 16))
    lis = {"name": "l", "protocol": "TLS", "cert": wrapped, "key": PEM_B64}
    conf = cfg.from_dict(minimal() | {"listeners": [lis]})
    assert (conf.listeners[0].cert, conf.listeners[0].key) == (PEM, PEM)


def test_lookup_by_name() -> None:
    conf = cfg.from_dict(base())
    assert conf.listener("l1") is conf.listeners[1]
    assert conf.cluster("c0") is conf.clusters[0]
    assert conf.listener("nope") is None
    assert conf.cluster("nope") is None


def test_repr_hides_secrets() -> None:
    auth = cfg.AuthConfig(username="alice", password="hunter2", secret="s3cr3t")
    lis = cfg.ListenerConfig(name="l", cert=PEM, key=b"PRIVATE")
    text = repr(cfg.StunnerConfig(auth=auth, listeners=(lis,)))
    for secret in ("hunter2", "s3cr3t", "PRIVATE", "MIIBfake"):
        assert secret not in text
    assert "password=<SECRET>" in text
    assert "secret=<SECRET>" in text
    assert "key=<SECRET>" in text
    assert "username='alice'" in text
    assert "secret=''" in repr(cfg.AuthConfig())


# ------------------------------------------------------------------------------------------
# Environment expansion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A", "1"),
        ("${A}", "1"),
        ("x$A:${B}y", "x1:two-y"),
        ("$A_B", "ab"),
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("${}", ""),
        ("a $ b", "a $ b"),
        ("trailing$", "trailing$"),
        ("${A", "${A"),
    ],
)
def test_expand_env(text: str, expected: str) -> None:
    assert cfg.expand_env(text, {"A": "1", "B": "two-", "A_B": "ab"}) == expected


def test_expand_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUNNER_ADDR", "10.1.2.3")
    assert cfg.expand_env("addr=$STUNNER_ADDR") == "addr=10.1.2.3"


def test_loads_expands_stunner_addr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUNNER_ADDR", "127.0.0.2")
    text = """
version: v1alpha1
auth: {credentials: {username: u, password: p}}
listeners: [{name: l, address: $STUNNER_ADDR, public_address: "${STUNNER_ADDR}"}]
"""
    lis = cfg.loads(text).listeners[0]
    assert (lis.address, lis.public_address) == ("127.0.0.2", "127.0.0.2")


# ------------------------------------------------------------------------------------------
# Fixture files


FIXTURE_ENV = {
    "STUNNER_LOGLEVEL": "all:WARN,turn:TRACE",
    "STUNNER_AUTH_TYPE": "static",
    "STUNNER_REALM": "",
    "STUNNER_USERNAME": "user-1",
    "STUNNER_PASSWORD": "pass-1",
    "STUNNER_PUBLIC_ADDR": "1.2.3.4",
    "STUNNER_ADDR": "127.0.0.1",
    "STUNNER_PORT": "3478",
    "STUNNER_MIN_PORT": "40000",
}


@pytest.fixture
def fixture_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STUNNER_SHARED_SECRET", "STUNNER_MAX_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FIXTURE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("fixture_env")
def test_yaml_fixture() -> None:
    conf = cfg.load(DATA / "stunnerd.yaml")
    assert conf.admin == cfg.AdminConfig(
        name="stunnerd-test",
        loglevel="all:WARN,turn:TRACE",
        metrics_endpoint="http://:8080/metrics",
        healthcheck_endpoint="http://:8086",
    )
    assert conf.auth == cfg.AuthConfig(username="user-1", password="pass-1")
    udp, tls = conf.listeners
    assert udp == cfg.ListenerConfig(
        name="stunner/udp-gateway/udp-listener",
        protocol="UDP",
        address="127.0.0.1",
        port=3478,
        public_address="1.2.3.4",
        public_port=3478,
        min_relay_port=40000,
        max_relay_port=65535,
        routes=("media-plane", "media-server"),
    )
    assert (tls.protocol, tls.address, tls.port, tls.routes) == (
        "TLS",
        "127.0.0.1",
        443,
        ("media-plane",),
    )
    assert tls.cert.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert tls.key.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert conf.clusters == (
        cfg.ClusterConfig(name="media-plane", endpoints=("10.244.0.0/16", "10.96.0.10")),
        cfg.ClusterConfig(
            name="media-server",
            type="STRICT_DNS",
            endpoints=("media-server.default.svc.cluster.local",),
        ),
    )
    assert cfg.warnings(conf) == []


def test_json_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUNNER_ADDR", raising=False)
    conf = cfg.load(DATA / "stunnerd.json")
    assert conf.admin == cfg.AdminConfig(
        name="stunner/stunnerd-config",
        loglevel="all:INFO,turn:DEBUG",
        metrics_endpoint="http://0.0.0.0:9090/metrics",
        healthcheck_endpoint=None,
    )
    assert conf.auth == cfg.AuthConfig(
        type="longterm", realm="example.com", secret="my-shared-secret"
    )
    assert conf.listeners == (
        cfg.ListenerConfig(
            name="stunner/tcp-gateway/tcp-listener",
            protocol="TCP",
            public_address="1.2.3.4",
            public_port=3478,
            min_relay_port=40000,
            max_relay_port=40100,
            routes=("stunner/media-plane", "stunner/missing"),
        ),
    )
    assert conf.clusters == (
        cfg.ClusterConfig(name="stunner/media-plane", endpoints=("10.96.0.10", "fd00::/8")),
    )
    assert cfg.warnings(conf) == ["listeners[0].routes: no cluster named 'stunner/missing' (yet)"]


def test_load_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cfg.load(tmp_path / "nope.conf")


# ------------------------------------------------------------------------------------------
# Validation messages

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    """A mutation setting base()[path] where path is like "listeners.1.port"."""

    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _del(path: str) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return apply


ERRORS: list[tuple[str, Mutation, str]] = [
    ("version-missing", _del("version"), "version: missing, expected v1alpha1"),
    ("version-v1", _set("version", "v1"), "version: unsupported 'v1', expected v1alpha1"),
    ("top-typo", _set("listener", []), "listener: unknown field, did you mean 'listeners'?"),
    ("top-unknown", _set("zzz", 1), "zzz: unknown field"),
    ("admin-not-map", _set("admin", "x"), "admin: must be a mapping, got string"),
    (
        "admin-typo",
        _set("admin.metric_endpoint", "http://:1"),
        "admin.metric_endpoint: unknown field, did you mean 'metrics_endpoint'?",
    ),
    ("admin-name-int", _set("admin.name", 7), "admin.name: must be a string, got 7"),
    (
        "loglevel-syntax",
        _set("admin.loglevel", "INFO"),
        "admin.loglevel: expected scope:LEVEL, got 'INFO'",
    ),
    (
        "loglevel-level",
        _set("admin.loglevel", "all:LOUD"),
        "admin.loglevel: unknown level 'LOUD', expected one of "
        "TRACE, DEBUG, INFO, WARN, WARNING, ERROR, DISABLE",
    ),
    (
        "metrics-scheme",
        _set("admin.metrics_endpoint", "https://:8080/metrics"),
        "admin.metrics_endpoint: must be an http:// URL, got 'https://:8080/metrics'",
    ),
    (
        "metrics-port",
        _set("admin.metrics_endpoint", "http://:http/metrics"),
        "admin.metrics_endpoint: invalid http:// URL, got 'http://:http/metrics'",
    ),
    (
        "health-garbage",
        _set("admin.healthcheck_endpoint", "8086"),
        "admin.healthcheck_endpoint: must be an http:// URL, got '8086'",
    ),
    (
        "auth-type",
        _set("auth.type", "oauth"),
        "auth.type: unknown type (plaintext, static, longterm, ephemeral or timewindowed), "
        "got 'oauth'",
    ),
    (
        "auth-no-password",
        _del("auth.credentials.password"),
        "auth.credentials.password: required for plaintext auth",
    ),
    (
        "auth-empty-username",
        _set("auth.credentials.username", ""),
        "auth.credentials.username: required for plaintext auth",
    ),
    (
        "auth-no-secret",
        _set("auth.type", "longterm"),
        "auth.credentials.secret: required for longterm auth",
    ),
    (
        "auth-no-creds",
        _del("auth.credentials"),
        "auth.credentials.username: required for plaintext auth",
    ),
    (
        "auth-int-password",
        _set("auth.credentials.password", 1234),
        "auth.credentials.password: must be a string, got 1234",
    ),
    (
        "auth-cred-typo",
        _set("auth.credentials.passwd", "x"),
        "auth.credentials.passwd: unknown field, did you mean 'password'?",
    ),
    ("listeners-not-list", _set("listeners", {}), "listeners: must be a list, got mapping"),
    ("listener-not-map", _set("listeners.1", "l1"), "listeners[1]: must be a mapping, got string"),
    ("listener-no-name", _del("listeners.1.name"), "listeners[1].name: required"),
    ("listener-dup", _set("listeners.1.name", "l0"), "listeners[1].name: duplicate name 'l0'"),
    (
        "listener-typo",
        _set("listeners.0.adress", "1.2.3.4"),
        "listeners[0].adress: unknown field, did you mean 'address'?",
    ),
    (
        "port-high",
        _set("listeners.1.port", 70000),
        "listeners[1].port: must be an integer 1-65535, got 70000",
    ),
    (
        "port-negative",
        _set("listeners.1.port", -1),
        "listeners[1].port: must be an integer 1-65535, got -1",
    ),
    (
        "port-string",
        _set("listeners.1.port", "3478"),
        "listeners[1].port: must be an integer 1-65535, got '3478'",
    ),
    (
        "port-bool",
        _set("listeners.1.port", True),
        "listeners[1].port: must be an integer 1-65535, got True",
    ),
    (
        "public-port",
        _set("listeners.0.public_port", 65536),
        "listeners[0].public_port: must be an integer 0-65535, got 65536",
    ),
    (
        "relay-port",
        _set("listeners.0.max_relay_port", 100000),
        "listeners[0].max_relay_port: must be an integer 1-65535, got 100000",
    ),
    (
        "relay-range",
        _set("listeners.0.min_relay_port", 65535),
        "listeners[0].min_relay_port: must be <= max_relay_port, got 65535 > 65534",
    ),
    (
        "legacy-conflict",
        _set("listeners.0.max_port", 40000),
        "listeners[0].max_port: conflicts with max_relay_port",
    ),
    (
        "protocol",
        _set("listeners.0.protocol", "SCTP"),
        "listeners[0].protocol: unknown protocol (UDP, TCP, TLS, DTLS or TURN-UDP, TURN-TCP, "
        "TURN-TLS, TURN-DTLS), got 'SCTP'",
    ),
    (
        "address",
        _set("listeners.0.address", "not an address"),
        "listeners[0].address: must be an IP address or host name, got 'not an address'",
    ),
    (
        "public-address",
        _set("listeners.0.public_address", "-bad-"),
        "listeners[0].public_address: must be an IP address or host name, got '-bad-'",
    ),
    (
        "tls-no-cert",
        _set("listeners.0.protocol", "TLS"),
        "listeners[0].cert: required for TLS listener",
    ),
    (
        "dtls-no-key",
        lambda d: d["listeners"][0].update(protocol="turn-dtls", cert=PEM_B64),
        "listeners[0].key: required for DTLS listener",
    ),
    (
        "cert-base64",
        _set("listeners.0.cert", "not base64!"),
        "listeners[0].cert: must be base64-encoded PEM, got invalid base64",
    ),
    (
        "key-not-pem",
        _set("listeners.0.key", base64.b64encode(b"just bytes").decode()),
        "listeners[0].key: must be base64-encoded PEM, got no PEM block",
    ),
    (
        "routes-not-list",
        _set("listeners.0.routes", "c0"),
        "listeners[0].routes: must be a list of strings, got string",
    ),
    (
        "routes-item",
        _set("listeners.0.routes", ["c0", 5]),
        "listeners[0].routes[1]: must be a non-empty string, got 5",
    ),
    ("cluster-no-name", _set("clusters.0.name", ""), "clusters[0].name: required"),
    (
        "cluster-dup",
        lambda d: d["clusters"].append({"name": "c0"}),
        "clusters[1].name: duplicate name 'c0'",
    ),
    (
        "cluster-type",
        _set("clusters.0.type", "EDS"),
        "clusters[0].type: unknown type (STATIC or STRICT_DNS), got 'EDS'",
    ),
    (
        "cluster-protocol",
        _set("clusters.0.protocol", "sctp"),
        "clusters[0].protocol: unknown protocol (udp or tcp), got 'sctp'",
    ),
    (
        "static-endpoint",
        _set("clusters.0.endpoints", ["10.0.0.1", "media.svc"]),
        "clusters[0].endpoints[1]: must be an IP address or CIDR, got 'media.svc'",
    ),
    (
        "static-port-range",
        _set("clusters.0.endpoints", ["10.0.0.1:<1-100>"]),
        "clusters[0].endpoints[0]: must be an IP address or CIDR, got '10.0.0.1:<1-100>'",
    ),
    (
        "dns-endpoint",
        lambda d: d["clusters"][0].update(type="STRICT_DNS", endpoints=["ok.svc", "bad_name"]),
        "clusters[0].endpoints[1]: must be a host name, got 'bad_name'",
    ),
    (
        "cluster-typo",
        _set("clusters.0.endpoint", []),
        "clusters[0].endpoint: unknown field, did you mean 'endpoints'?",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validation_error_messages(mutate: Mutation, message: str) -> None:
    data = base()
    data["listeners"][0]["max_relay_port"] = 65534
    mutate(data)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict(data)
    assert str(info.value) == message


def test_base_is_valid() -> None:
    """The mutations above start from a valid config, so each one is what breaks it."""
    data = base()
    data["listeners"][0]["max_relay_port"] = 65534
    assert cfg.from_dict(data).listeners[0].max_relay_port == 65534


def test_config_error_is_a_value_error() -> None:
    assert issubclass(cfg.ConfigError, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "f.conf: empty config"),
        ("- a\n- b\n", "f.conf: must be a mapping, got list"),
        (
            "version: v1alpha1\nversion: v1\n",
            "f.conf:2:1: not valid YAML or JSON: duplicate key 'version'",
        ),
        (
            "a: [1\n",
            "f.conf:2:1: not valid YAML or JSON: expected ',' or ']', but got '<stream end>'",
        ),
        (
            '{"version": "v1alpha1", "version": "v1"}',
            "f.conf:1:25: not valid YAML or JSON: duplicate key 'version'",
        ),
        ("version: v2\n", "f.conf: version: unsupported 'v2', expected v1alpha1"),
    ],
)
def test_loads_errors_name_the_source(text: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.loads(text, source="f.conf")
    assert str(info.value) == message


def test_json_with_tab_indentation() -> None:
    text = json.dumps(minimal(), indent="\t")
    assert "\t" in text
    assert cfg.loads(text) == cfg.from_dict(minimal())


# ------------------------------------------------------------------------------------------
# Serialisation


@pytest.mark.usefixtures("fixture_env")
@pytest.mark.parametrize("name", ["stunnerd.yaml", "stunnerd.json"])
def test_to_dict_round_trip_fixtures(name: str) -> None:
    conf = cfg.load(DATA / name)
    assert cfg.from_dict(cfg.to_dict(conf)) == conf
    assert cfg.loads(cfg.dumps(conf)) == conf


def test_to_dict_uses_upstream_field_names() -> None:
    conf = cfg.from_dict(
        base()
        | {
            "listeners": [
                {"name": "l", "protocol": "tls", "cert": PEM_B64, "key": PEM_B64, "public_port": 1}
            ]
        }
    )
    assert cfg.to_dict(conf) == {
        "version": "v1alpha1",
        "admin": {
            "name": "d",
            "loglevel": "all:INFO",
            "metrics_endpoint": "http://:8080/m",
            "healthcheck_endpoint": "http://:8086",
        },
        "auth": {
            "type": "plaintext",
            "realm": "stunner.l7mp.io",
            "credentials": {"username": "u", "password": "p"},
        },
        "listeners": [
            {
                "name": "l",
                "protocol": "TLS",
                "address": "0.0.0.0",
                "port": 3478,
                "public_port": 1,
                "min_relay_port": 32768,
                "max_relay_port": 65535,
                "cert": PEM_B64,
                "key": PEM_B64,
                "routes": [],
            }
        ],
        "clusters": [
            {"name": "c0", "type": "STATIC", "protocol": "udp", "endpoints": ["10.0.0.0/8"]}
        ],
    }


def test_round_trip_disabled_healthcheck_and_longterm() -> None:
    data = minimal() | {
        "admin": {"healthcheck_endpoint": ""},
        "auth": {"type": "ephemeral", "credentials": {"secret": "s"}},
    }
    conf = cfg.from_dict(data)
    assert cfg.to_dict(conf)["auth"]["credentials"] == {"secret": "s"}
    assert cfg.from_dict(cfg.to_dict(conf)) == conf


# ------------------------------------------------------------------------------------------
# from_uri


def test_from_uri() -> None:
    conf = cfg.from_uri("turn://us%40er:p%3As%20s@127.0.0.1:3479?transport=tcp")
    assert conf == cfg.StunnerConfig(
        version="v1alpha1",
        admin=cfg.AdminConfig(metrics_endpoint="", healthcheck_endpoint=None),
        auth=cfg.AuthConfig(type="plaintext", username="us@er", password="p:s s"),
        listeners=(
            cfg.ListenerConfig(
                name="default-listener",
                protocol="TCP",
                address="127.0.0.1",
                port=3479,
                routes=("allow-any",),
            ),
        ),
        clusters=(cfg.ClusterConfig(name="allow-any", type="STATIC", endpoints=("0.0.0.0/0",)),),
    )
    assert cfg.from_dict(cfg.to_dict(conf)) == conf


@pytest.mark.parametrize(
    ("uri", "protocol", "port"),
    [("turn://u:p@10.0.0.1", "UDP", 3478), ("TURN://u:p@[::1]:5000?transport=UDP", "UDP", 5000)],
)
def test_from_uri_defaults(uri: str, protocol: str, port: int) -> None:
    lis = cfg.from_uri(uri).listeners[0]
    assert (lis.protocol, lis.port) == (protocol, port)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("turns://u:p@h", "uri: TLS needs a certificate, use a config file instead"),
        ("turn://u:p@h?transport=tls", "uri: TLS needs a certificate, use a config file instead"),
        ("udp://u:p@h:1", "uri: must be a turn:// or turns:// URI, got 'udp://u:p@h:1'"),
        ("turn:u:p@h:1", "uri: must be a turn:// or turns:// URI, got 'turn:u:p@h:1'"),
        (
            "turn://u:p@h:1?transport=sctp",
            "uri: only ?transport=udp|tcp|tls|dtls is supported, got 'turn://u:p@h:1?transport=sctp'",
        ),
        (
            "turn://u:p@h:1?foo=bar",
            "uri: only ?transport=udp|tcp|tls|dtls is supported, got 'turn://u:p@h:1?foo=bar'",
        ),
        ("turn://u:p@h:1?foo", "uri: invalid TURN URI 'turn://u:p@h:1?foo'"),
        ("turn://u:p@:3478", "uri: missing or invalid host in 'turn://u:p@:3478'"),
        ("turn://u:p@a_b:3478", "uri: missing or invalid host in 'turn://u:p@a_b:3478'"),
        ("turn://h:3478", "uri: user and password must be set (turn://user:pass@host:port)"),
        ("turns://u@h:3478", "uri: user and password must be set (turns://user:pass@host:port)"),
        ("turn://u:p@h:99999", "uri: invalid TURN URI 'turn://u:p@h:99999'"),
        ("turn://u:p@h:0", "uri: port must be 1-65535, got 'turn://u:p@h:0'"),
    ],
)
def test_from_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_uri(uri)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("turn://u:p@h", ("UDP", "h", 3478)),
        ("turn://u:p@h:1?transport=TCP", ("TCP", "h", 1)),
        ("turn://u:p@h?transport=tls", ("TLS", "h", 443)),
        ("turn://u:p@h?transport=dtls", ("DTLS", "h", 443)),
        ("turns://u:p@h", ("TLS", "h", 443)),  # RFC 7065: turns defaults to TCP
        ("turns://u:p@h?transport=udp", ("DTLS", "h", 443)),
        ("turns://u:p@h:5349?transport=tcp", ("TLS", "h", 5349)),
        ("turns://u:p@[fd00::1]:5349?transport=tls", ("TLS", "fd00::1", 5349)),
    ],
)
def test_parse_turn_uri(uri: str, expected: tuple[str, str, int]) -> None:
    turn = cfg.parse_turn_uri(uri)
    assert (turn.protocol, turn.host, turn.port) == expected
    assert (turn.username, turn.password) == ("u", "p")
    assert repr(turn).endswith("username='u', password=<SECRET>)")


def test_parse_turn_uri_field_name_and_decoding() -> None:
    assert cfg.parse_turn_uri("turn://a%3Ab:c%2Fd%40@h").password == "c/d@"
    assert cfg.parse_turn_uri("turn://a%3Ab:c%2Fd%40@h").username == "a:b"
    with pytest.raises(cfg.ConfigError, match=r"^server: must be a turn:// or turns:// URI"):
        cfg.parse_turn_uri("udp://h:1", field="server")


# ------------------------------------------------------------------------------------------
# diff


def test_diff_unchanged_is_empty() -> None:
    assert cfg.diff(cfg.from_dict(base()), cfg.from_dict(base())) == cfg.ConfigDiff()


def test_diff_only_metrics_endpoint() -> None:
    new = base()
    new["admin"]["metrics_endpoint"] = "http://:9090/metrics"
    d = cfg.diff(cfg.from_dict(base()), cfg.from_dict(new))
    assert d == cfg.ConfigDiff(metrics_endpoint_changed=True)


def test_diff_healthcheck_and_loglevel() -> None:
    new = base()
    new["admin"].update(healthcheck_endpoint="", loglevel="all:DEBUG")
    d = cfg.diff(cfg.from_dict(base()), cfg.from_dict(new))
    assert d == cfg.ConfigDiff(healthcheck_endpoint_changed=True, loglevel_changed=True)


def test_diff_auth() -> None:
    new = base()
    new["auth"]["credentials"]["password"] = "other"
    assert cfg.diff(cfg.from_dict(base()), cfg.from_dict(new)) == cfg.ConfigDiff(auth_changed=True)


def test_diff_listeners_added_removed_changed() -> None:
    new = base()
    new["listeners"][0]["port"] = 4000  # changed
    new["listeners"][1]["name"] = "l2"  # l1 removed, l2 added
    old_conf, new_conf = cfg.from_dict(base()), cfg.from_dict(new)
    d = cfg.diff(old_conf, new_conf)
    assert d == cfg.ConfigDiff(
        listeners_added=(new_conf.listeners[1],),
        listeners_removed=(old_conf.listeners[1],),
        listeners_changed=((old_conf.listeners[0], new_conf.listeners[0]),),
    )
    assert d.listeners_changed[0][1].port == 4000


def test_diff_cluster_changed_added_removed() -> None:
    new = base()
    new["clusters"][0]["endpoints"] = ["10.0.0.0/8", "192.168.0.1"]
    new["clusters"].append({"name": "c1"})
    old_conf, new_conf = cfg.from_dict(base()), cfg.from_dict(new)
    assert cfg.diff(old_conf, new_conf) == cfg.ConfigDiff(
        clusters_added=(new_conf.clusters[1],),
        clusters_changed=((old_conf.clusters[0], new_conf.clusters[0]),),
    )
    assert cfg.diff(new_conf, old_conf) == cfg.ConfigDiff(
        clusters_removed=(new_conf.clusters[1],),
        clusters_changed=((new_conf.clusters[0], old_conf.clusters[0]),),
    )


def test_diff_ignores_route_order() -> None:
    new = base()
    new["listeners"][0]["routes"] = ["c0", "c0"]
    assert cfg.diff(cfg.from_dict(base()), cfg.from_dict(new)) == cfg.ConfigDiff()


# ------------------------------------------------------------------------------------------
# HTTP endpoints and log levels


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", None),
        ("http://:8080/metrics", cfg.HttpEndpoint("0.0.0.0", 8080, "/metrics")),
        ("http://0.0.0.0:8080/metrics", cfg.HttpEndpoint("0.0.0.0", 8080, "/metrics")),
        ("http://127.0.0.2:9000", cfg.HttpEndpoint("127.0.0.2", 9000, "/")),
        ("http://[::1]:9000/x", cfg.HttpEndpoint("::1", 9000, "/x")),
        ("http://localhost/", cfg.HttpEndpoint("localhost", 1234, "/")),
        ("http://:/", cfg.HttpEndpoint("0.0.0.0", 1234, "/")),
        ("http://", cfg.HttpEndpoint("0.0.0.0", 1234, "/")),
    ],
)
def test_parse_http_endpoint(url: str, expected: cfg.HttpEndpoint | None) -> None:
    assert cfg.parse_http_endpoint(url, 1234) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h/", "must be an http:// URL, got 'ftp://h/'"),
        ("https://h/", "must be an http:// URL, got 'https://h/'"),
        (":8080/metrics", "must be an http:// URL, got ':8080/metrics'"),
        ("http:/h", "must be an http:// URL, got 'http:/h'"),
        ("http://h:99999/", "invalid http:// URL, got 'http://h:99999/'"),
        ("http://[::1/", "invalid http:// URL, got 'http://[::1/'"),
        ("http://h:0/", "port must be 1-65535, got 'http://h:0/'"),
        ("http://a b:1/", "invalid host 'a b' in 'http://a b:1/'"),
        ("http://u:p@h/", "user info, query and fragment not allowed, got 'http://u:p@h/'"),
        ("http://h/?q=1", "user info, query and fragment not allowed, got 'http://h/?q=1'"),
    ],
)
def test_parse_http_endpoint_errors(url: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse_http_endpoint(url, 8080, field="admin.metrics_endpoint")
    assert str(info.value) == f"admin.metrics_endpoint: {message}"


def test_parse_http_endpoint_default_field_name() -> None:
    with pytest.raises(cfg.ConfigError, match=r"^endpoint: must be an http:// URL"):
        cfg.parse_http_endpoint("x", 1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all:INFO", {"all": logging.INFO}),
        ("turn:DEBUG", {"all": logging.INFO, "turn": logging.DEBUG}),
        ("ALL:warn, stunner : trace", {"all": logging.WARNING, "stunner": logging.DEBUG - 5}),
        ("all:WARNING,all:ERROR", {"all": logging.ERROR}),
        ("all:DISABLE,auth:TRACE", {"all": logging.CRITICAL + 10, "auth": logging.DEBUG - 5}),
    ],
)
def test_parse_loglevel(spec: str, expected: dict[str, int]) -> None:
    assert cfg.parse_loglevel(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "expected scope:LEVEL, got ''"),
        ("all:INFO,", "expected scope:LEVEL, got ''"),
        (":INFO", "expected scope:LEVEL, got ':INFO'"),
        ("all:", "expected scope:LEVEL, got 'all:'"),
        (
            "all:VERBOSE",
            "unknown level 'VERBOSE', expected one of "
            "TRACE, DEBUG, INFO, WARN, WARNING, ERROR, DISABLE",
        ),
    ],
)
def test_parse_loglevel_errors(spec: str, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse_loglevel(spec, field="--log")
    assert str(info.value) == f"--log: {message}"


# ------------------------------------------------------------------------------------------
# warnings


def test_warnings() -> None:
    data = base()
    data["listeners"][1].update(protocol="DTLS", port=3478, cert=PEM_B64, key=PEM_B64, routes=["x"])
    data["admin"].update(metrics_endpoint="http://127.0.0.1:8086/m")
    assert cfg.warnings(cfg.from_dict(data)) == [
        "listeners[1].routes: no cluster named 'x' (yet)",
        "listeners[1]: udp 0.0.0.0:3478 also used by listeners[0]",
        "admin: metrics and health check endpoints share port 8086",
    ]
    assert cfg.warnings(cfg.from_dict(base())) == []


def test_constants_are_the_defaults() -> None:
    admin = cfg.AdminConfig()
    assert (admin.name, admin.loglevel) == (c.DEFAULT_STUNNERD_NAME, c.DEFAULT_LOGLEVEL)
    assert admin.healthcheck_endpoint == c.DEFAULT_HEALTHCHECK_ENDPOINT


def test_max_allocation_lifetime_parses_and_is_bounded() -> None:
    data = base()
    assert cfg.from_dict(data).admin.limits.max_allocation_lifetime == c.MAX_ALLOCATION_LIFETIME
    data["admin"]["limits"] = {"max_allocation_lifetime": 5}
    assert cfg.from_dict(data).admin.limits.max_allocation_lifetime == 5
    data["admin"]["limits"] = {"max_allocation_lifetime": 0}
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict(data)
    assert str(info.value) == (
        "admin.limits.max_allocation_lifetime: must be an integer 1-86400, got 0"
    )
