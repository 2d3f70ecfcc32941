"""render(): GatewayConfig, Gateways, UDPRoutes, Services and Endpoints in, the exact stunnerd
config and status out. Every rendered config must load in stunnerd (`stunner.config`).

`expected_config` spells out the exact upstream document and `expected_text` its exact YAML, the
bytes the ConfigMap holds and ``stunnerctl render`` prints."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stunner import config as stunner_config
from stunner.operator import conditions as cond
from stunner.operator.conditions import Condition
from stunner.operator.render import RenderInput, RenderResult, check_config, dump_config, render

from . import objects as o

SPEC_METRICS = "http://:8080/metrics"
PATCHED_METRICS = "http://0.0.0.0:8080/metrics"

CLUSTER = {
    "name": "stunner/media-plane",
    "type": "STATIC",
    "protocol": "udp",
    "endpoints": ["10.244.0.5", "10.244.1.7", "10.96.0.10"],
}


def expected_config(**admin: Any) -> dict[str, Any]:
    return {
        "version": "v1alpha1",
        "admin": {
            "name": "stunner/stunner-gatewayconfig",
            "loglevel": "all:INFO",
            **admin,
            "healthcheck_endpoint": "http://:8086",
        },
        "auth": {
            "type": "plaintext",
            "realm": "stunner.l7mp.io",
            "credentials": {"username": "my-user", "password": "my-password"},
        },
        "listeners": [
            {
                "name": "stunner/udp-gateway/udp-listener",
                "protocol": "UDP",
                "address": "$STUNNER_ADDR",
                "port": 3478,
                "min_relay_port": 32768,
                "max_relay_port": 65535,
                "routes": ["stunner/media-plane"],
            }
        ],
        "clusters": [CLUSTER],
    }


def expected_text(**admin: Any) -> str:
    return yaml.safe_dump(expected_config(**admin), sort_keys=False)


def doc(result: RenderResult) -> dict[str, Any]:
    """The rendered config as the upstream v1alpha1 document."""
    assert result.config is not None
    return stunner_config.to_dict(result.config)


def run(gc: dict[str, Any] | None = None, **kw: Any) -> RenderResult:
    defaults: dict[str, Any] = {
        "gateways": [o.gateway()],
        "routes": [o.udproute()],
        "services": [o.service()],
        "endpoints": [o.endpoints()],
    }
    result = render(RenderInput(gatewayconfig=gc or o.gatewayconfig(), **{**defaults, **kw}))
    if result.config is not None:
        check_config(result.config)  # stunnerd would load it
    return result


def loaded(result: RenderResult) -> stunner_config.StunnerConfig:
    """The config as stunnerd parses it, with $STUNNER_ADDR expanded as in the pod."""
    assert result.config is not None
    text = stunner_config.expand_env(dump_config(result.config), {"STUNNER_ADDR": "10.244.2.3"})
    return stunner_config.loads(text)


def test_spec_example_gatewayconfig() -> None:
    result = run(o.gatewayconfig(metricsEndpoint=SPEC_METRICS))
    assert result.error is None
    assert doc(result) == expected_config(metrics_endpoint=SPEC_METRICS)
    assert result.configmap == ("stunner", "stunnerd-config")
    assert result.gatewayconfig == (
        Condition(cond.ACCEPTED, True, cond.ACCEPTED, "1 listeners, 1 clusters"),
    )


def test_metrics_endpoint_patch_maps_verbatim() -> None:
    before = run(o.gatewayconfig())
    after = run(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS))
    assert doc(before) == expected_config()  # no metricsEndpoint: no metrics server
    assert doc(after) == expected_config(metrics_endpoint=PATCHED_METRICS)
    assert loaded(before).admin.metrics_endpoint == ""
    assert loaded(after).admin.metrics_endpoint == PATCHED_METRICS


def test_rendered_config_loads_in_stunnerd() -> None:
    cfg = loaded(run(o.gatewayconfig(metricsEndpoint=SPEC_METRICS)))
    (lis,) = cfg.listeners
    assert (lis.name, lis.address, lis.port) == (
        "stunner/udp-gateway/udp-listener",
        "10.244.2.3",
        3478,
    )
    assert lis.routes == ("stunner/media-plane",)
    assert cfg.cluster("stunner/media-plane") is not None


def test_spec_fields_map_to_config() -> None:
    gc = o.gatewayconfig(
        realm="example.com",
        logLevel="all:DEBUG,turn:INFO",
        healthCheckEndpoint="http://0.0.0.0:9000",
        minPort=40000,
        maxPort=40100,
        stunnerConfig="my-config",
    )
    result = run(gc)
    assert result.config is not None
    assert result.configmap == ("stunner", "my-config")
    assert doc(result)["admin"] == {
        "name": "stunner/stunner-gatewayconfig",
        "loglevel": "all:DEBUG,turn:INFO",
        "healthcheck_endpoint": "http://0.0.0.0:9000",
    }
    assert doc(result)["auth"]["realm"] == "example.com"
    (lis,) = doc(result)["listeners"]
    assert (lis["min_relay_port"], lis["max_relay_port"]) == (40000, 40100)


def test_longterm_auth() -> None:
    gc = o.gatewayconfig(userName=None, password=None, authType="longterm", sharedSecret="s3cr3t")
    result = run(gc)
    assert result.config is not None
    assert doc(result)["auth"] == {
        "type": "longterm",
        "realm": "stunner.l7mp.io",
        "credentials": {"secret": "s3cr3t"},
    }


def test_auth_ref_secret_overrides_inline_credentials() -> None:
    gc = o.gatewayconfig(authRef={"name": "stunner-auth"})
    secret = o.auth_secret(type="plaintext", username="ref-user", password="ref-pass")
    result = run(gc, secrets=[secret])
    assert result.config is not None
    assert doc(result)["auth"]["credentials"] == {"username": "ref-user", "password": "ref-pass"}
    longterm = o.auth_secret(type="longterm", secret="from-secret")
    result = run(gc, secrets=[longterm])
    assert result.config is not None
    assert doc(result)["auth"]["credentials"] == {"secret": "from-secret"}


def test_all_listener_protocols_and_public_address() -> None:
    gw = o.gateway(
        listeners=[
            o.listener("udp", "UDP", 3478),
            o.listener("tcp", "TCP", 3478),
            o.listener("tls", "TLS", 3479, tls={"certificateRefs": [{"name": "stunner-tls"}]}),
            o.listener(
                "dtls", "TURN-DTLS", 3479, tls={"certificateRefs": [{"name": "stunner-tls"}]}
            ),
        ],
        addresses=[{"type": "IPAddress", "value": "1.2.3.4"}],
    )
    result = run(gateways=[gw], secrets=[o.tls_secret()])
    assert result.config is not None
    got = [(x["name"], x["protocol"], x["port"]) for x in doc(result)["listeners"]]
    assert got == [
        ("stunner/udp-gateway/udp", "UDP", 3478),
        ("stunner/udp-gateway/tcp", "TCP", 3478),
        ("stunner/udp-gateway/tls", "TLS", 3479),
        ("stunner/udp-gateway/dtls", "DTLS", 3479),
    ]
    for lis in doc(result)["listeners"]:
        assert (lis["public_address"], lis["public_port"]) == ("1.2.3.4", lis["port"])
        assert lis["routes"] == ["stunner/media-plane"]
    tls = doc(result)["listeners"][2]
    assert (tls["cert"], tls["key"]) == (o.b64(o.CERT_PEM), o.b64(o.KEY_PEM))
    assert loaded(result).listener("stunner/udp-gateway/tls").cert == o.CERT_PEM.encode()  # type: ignore[union-attr]
    status = result.gateways[("stunner", "udp-gateway")]
    assert [x.attached_routes for x in status.listeners] == [1, 1, 1, 1]


def listener_conditions(result: RenderResult, name: str) -> dict[str, Condition]:
    status = result.gateways[("stunner", "udp-gateway")]
    (lis,) = [x for x in status.listeners if x.name == name]
    return {c.type: c for c in lis.conditions}


def test_tls_listener_without_secret_is_left_out_with_a_reason() -> None:
    gw = o.gateway(
        listeners=[
            o.listener("udp", "UDP", 3478),
            o.listener("tls", "TLS", 3479, tls={"certificateRefs": [{"name": "missing"}]}),
        ]
    )
    result = run(gateways=[gw])
    assert result.config is not None
    assert [x["name"] for x in doc(result)["listeners"]] == ["stunner/udp-gateway/udp"]
    resolved = listener_conditions(result, "tls")[cond.RESOLVED_REFS]
    assert resolved == Condition(
        cond.RESOLVED_REFS,
        False,
        cond.INVALID_CERTIFICATE_REF,
        "Secret stunner/missing not found or not readable",
    )
    assert listener_conditions(result, "tls")[cond.PROGRAMMED].status is False


def test_unsupported_protocol_and_port_conflict() -> None:
    gw = o.gateway(
        listeners=[
            o.listener("udp", "UDP", 3478),
            o.listener("http", "HTTP", 80),
            o.listener("udp-again", "UDP", 3478),
            o.listener("tcp", "TCP", 3478),  # other transport: no conflict
        ]
    )
    result = run(gateways=[gw])
    assert result.config is not None
    names = [x["name"] for x in doc(result)["listeners"]]
    assert names == ["stunner/udp-gateway/udp", "stunner/udp-gateway/tcp"]
    http = listener_conditions(result, "http")
    assert (http[cond.ACCEPTED].status, http[cond.ACCEPTED].reason) == (
        False,
        cond.UNSUPPORTED_PROTOCOL,
    )
    again = listener_conditions(result, "udp-again")
    assert again[cond.CONFLICTED] == Condition(
        cond.CONFLICTED,
        True,
        cond.PROTOCOL_CONFLICT,
        "udp port 3478 is already used by listener stunner/udp-gateway/udp",
    )
    assert again[cond.ACCEPTED].reason == cond.PORT_UNAVAILABLE
    ok = listener_conditions(result, "tcp")
    assert [
        ok[t].status for t in (cond.ACCEPTED, cond.CONFLICTED, cond.RESOLVED_REFS, cond.PROGRAMMED)
    ] == [
        True,
        False,
        True,
        True,
    ]


def route_conditions(
    result: RenderResult, route: str = "media-plane"
) -> list[dict[str, Condition]]:
    return [{c.type: c for c in p.conditions} for p in result.routes[("stunner", route)]]


def test_route_section_name_selects_the_listener() -> None:
    gw = o.gateway(listeners=[o.listener("udp", "UDP", 3478), o.listener("tcp", "TCP", 3478)])
    route = o.udproute(parents=[{"name": "udp-gateway", "sectionName": "tcp"}])
    result = run(gateways=[gw], routes=[route])
    assert result.config is not None
    assert [x["routes"] for x in doc(result)["listeners"]] == [[], ["stunner/media-plane"]]
    wrong = o.udproute(parents=[{"name": "udp-gateway", "sectionName": "nope"}])
    result = run(gateways=[gw], routes=[wrong])
    assert result.config is not None
    assert doc(result)["clusters"] == []  # attached nowhere: no cluster
    (parent,) = route_conditions(result)
    assert parent[cond.ACCEPTED].reason == cond.NO_MATCHING_PARENT


def test_route_from_other_namespace_needs_allowed_routes_all() -> None:
    route = o.udproute(namespace="media", parents=[{"name": "udp-gateway", "namespace": "stunner"}])
    result = run(routes=[route])
    assert result.config is not None and doc(result)["clusters"] == []
    (parent,) = [{c.type: c for c in p.conditions} for p in result.routes[("media", "media-plane")]]
    assert parent[cond.ACCEPTED].reason == cond.NOT_ALLOWED_BY_LISTENERS
    gw = o.gateway(
        listeners=[
            o.listener("udp-listener", "UDP", 3478, allowedRoutes={"namespaces": {"from": "All"}})
        ]
    )
    result = run(gateways=[gw], routes=[route])
    assert result.config is not None
    assert [x["name"] for x in doc(result)["clusters"]] == ["media/media-plane"]


def test_route_to_a_foreign_gateway_is_ignored() -> None:
    route = o.udproute(parents=[{"name": "someone-elses-gateway"}])
    result = run(routes=[route])
    assert result.routes == {}
    assert result.config is not None and doc(result)["clusters"] == []


def test_backends_missing_service_and_wrong_kind() -> None:
    route = o.udproute(
        backends=[
            {"name": "media-server", "namespace": "default", "port": 9001},
            {"name": "gone", "port": 9001},
            {"group": "example.com", "kind": "Thing", "name": "x"},
        ]
    )
    result = run(routes=[route])
    assert result.config is not None
    assert doc(result)["clusters"] == [CLUSTER]  # what resolved is still rendered
    (parent,) = route_conditions(result)
    assert parent[cond.ACCEPTED].status is True
    assert parent[cond.RESOLVED_REFS] == Condition(
        cond.RESOLVED_REFS,
        False,
        cond.INVALID_KIND,
        "Service stunner/gone not found; example.com/Thing x: only Services",
    )


def test_headless_service_and_not_ready_endpoints() -> None:
    svc = o.service(cluster_ip="None")
    eps = o.endpoints(ips=("10.244.0.5",), not_ready=("10.244.9.9",))
    result = run(services=[svc], endpoints=[eps])
    assert result.config is not None
    assert doc(result)["clusters"][0]["endpoints"] == ["10.244.0.5"]


BAD_SPECS = [
    ({"realm": "Not A Realm"}, "spec.realm: 'Not A Realm' does not match"),
    ({"authType": "plaintext-foo"}, "spec.authType: 'plaintext-foo' does not match"),
    ({"userName": None}, "spec.userName, spec.password: required for plaintext auth"),
    ({"password": "has space"}, "spec.password: '<hidden>' does not match"),
    ({"authType": "longterm"}, "spec.sharedSecret: required for longterm auth"),
    (
        {"minPort": 50000, "maxPort": 40000},
        "spec.minPort: must be <= spec.maxPort, got 50000 > 40000",
    ),
    ({"maxPort": 70000}, "spec.maxPort: must be an integer 1-65535, got 70000"),
    ({"metricsEndpoint": "https://:8080/metrics"}, "spec.metricsEndpoint: 'https://:8080/metrics'"),
    ({"metricsEndpoint": "http://:99999/metrics"}, "spec.metricsEndpoint: invalid http:// URL"),
    ({"logLevel": "all:LOUD"}, "spec.logLevel: unknown level 'LOUD'"),
    ({"stunnerConfig": "bad_name"}, "spec.stunnerConfig: 'bad_name' does not match"),
    ({"authRef": {"name": "missing"}}, "spec.authRef: Secret stunner/missing not found"),
    ({"realm": 42}, "spec.realm: must be a string, got 42"),
    ({"password": "pa$word"}, "spec.password: the password contains '$' before a name"),
    (
        {"authType": "longterm", "sharedSecret": "x${HOME}"},
        "spec.sharedSecret: the secret contains '$'",
    ),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_spec_is_rejected_with_a_reason(spec: dict[str, Any], message: str) -> None:
    result = run(o.gatewayconfig(**spec))
    assert result.config is None
    assert result.error is not None and result.error.startswith(message), result.error
    (accepted,) = result.gatewayconfig
    assert (accepted.status, accepted.reason, accepted.message) == (
        False,
        cond.INVALID_PARAMETERS,
        result.error,
    )
    gw = result.gateways[("stunner", "udp-gateway")]
    programmed = {c.type: c for c in gw.conditions}[cond.PROGRAMMED]
    assert (programmed.status, programmed.reason) == (False, cond.INVALID)
    assert programmed.message == f"GatewayConfig stunner/stunner-gatewayconfig: {result.error}"


def test_dollar_not_before_a_name_is_fine() -> None:
    result = run(o.gatewayconfig(password="pa$$-$"))
    assert result.config is not None
    assert loaded(result).auth.password == "pa$$-$"


def test_bad_spec_still_names_its_configmap() -> None:
    result = run(o.gatewayconfig(stunnerConfig="other", realm="BAD"))
    assert result.configmap == ("stunner", "other")


def test_bad_listener_does_not_reject_the_gatewayconfig() -> None:
    gw = o.gateway(listeners=[o.listener("udp", "UDP", 0)])
    result = run(gateways=[gw])
    assert result.error is None and result.config is not None
    assert doc(result)["listeners"] == []
    programmed = {c.type: c for c in result.gateways[("stunner", "udp-gateway")].conditions}
    assert programmed[cond.PROGRAMMED] == Condition(
        cond.PROGRAMMED, False, cond.INVALID, "no usable listeners"
    )


def test_several_gateways_are_ordered_by_name() -> None:
    a = o.gateway(name="b-gateway", listeners=[o.listener("l", "UDP", 3478)])
    b = o.gateway(name="a-gateway", listeners=[o.listener("l", "TCP", 3478)])
    route = o.udproute(parents=[{"name": "a-gateway"}, {"name": "b-gateway"}])
    result = run(gateways=[a, b], routes=[route])
    assert result.config is not None
    assert [x["name"] for x in doc(result)["listeners"]] == [
        "stunner/a-gateway/l",
        "stunner/b-gateway/l",
    ]
    assert len(result.routes[("stunner", "media-plane")]) == 2


def test_render_is_deterministic() -> None:
    one = run(o.gatewayconfig(metricsEndpoint=SPEC_METRICS))
    two = run(
        o.gatewayconfig(metricsEndpoint=SPEC_METRICS),
        endpoints=[o.endpoints(ips=("10.244.0.5", "10.244.1.7"))],
    )
    assert one.config == two.config


def test_public_address_skips_what_is_not_an_ip() -> None:
    gw = o.gateway(
        addresses=[
            {"type": "Hostname", "value": "turn.example.com"},
            {"value": "not-an-ip"},
            {"type": "IPAddress", "value": "5.6.7.8"},
        ]
    )
    result = run(gateways=[gw])
    assert result.config is not None
    (lis,) = doc(result)["listeners"]
    assert (lis["public_address"], lis["public_port"]) == ("5.6.7.8", 3478)


def test_certificate_without_end_armour_is_a_listener_problem() -> None:
    secret = o.tls_secret()
    secret["data"]["tls.crt"] = o.b64("-----BEGIN CERTIFICATE-----\nMIIB\n")
    gw = o.gateway(
        listeners=[
            o.listener("tls", "TLS", 3479, tls={"certificateRefs": [{"name": "stunner-tls"}]})
        ]
    )
    result = run(gateways=[gw], secrets=[secret])
    assert result.error is None and result.config is not None
    assert doc(result)["listeners"] == []
    assert listener_conditions(result, "tls")[cond.RESOLVED_REFS].message == (
        "Secret stunner/stunner-tls needs PEM tls.crt and tls.key"
    )


def test_a_config_stunnerd_would_reject_is_never_returned() -> None:
    """The last guard: a value the typed config can hold but stunnerd refuses (here a Service
    whose clusterIP is not an IP) is caught by loading the rendered text as stunnerd would."""
    result = run(services=[o.service(cluster_ip="not-an-ip")])
    assert result.config is None
    assert result.error == (
        "rendered config rejected by stunnerd: stunnerd.conf: clusters[0].endpoints[2]: "
        "must be an IP address or CIDR, got 'not-an-ip'"
    )
    bad = stunner_config.StunnerConfig(listeners=(stunner_config.ListenerConfig("x", port=70000),))
    with pytest.raises(stunner_config.ConfigError):
        check_config(bad)
