"""The stunner chart rendered by the Helm engine: operator, GatewayConfig, stunnerd, Service."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from stunner import constants
from stunner.batchio import GSO_ENV
from tests.charts.manifests import (
    CHARTS,
    METRICS_ENDPOINT,
    POD_MONITOR_SELECTOR,
    STUNNER,
    container,
    kinds,
    monitoring_values,
    one,
    render_stunner,
)

helm_python = pytest.importorskip("helm_python")

NAMESPACE = "stunner"
OPERATOR_ROLE = f"stunner-operator-{NAMESPACE}"


def _stunnerd(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(render_stunner(values), "Deployment", "stunner")


def test_default_install_has_operator_gatewayconfig_stunnerd_and_service() -> None:
    assert kinds(render_stunner()) == [
        ("ClusterRole", OPERATOR_ROLE),
        ("ClusterRoleBinding", OPERATOR_ROLE),
        ("Deployment", "stunner"),
        ("Deployment", "stunner-operator"),
        ("GatewayConfig", constants.GATEWAYCONFIG_NAME),
        ("Service", "stunner"),
        ("ServiceAccount", "stunner-operator"),
    ]


def test_crds_directory_holds_the_gatewayconfig_crd() -> None:
    with helm_python.Chart.load(str(STUNNER)) as chart:
        crds = [doc for crd in chart.crds for doc in yaml.safe_load_all(crd["data"]) if doc]
    if not crds:
        pytest.skip("charts/stunner/crds/ is not there yet (owned by the operator work)")
    names = {(c["spec"]["group"], c["spec"]["names"]["kind"]) for c in crds}
    assert ("stunner.l7mp.io", "GatewayConfig") in names


def test_stunnerd_follows_the_operator_contract() -> None:
    deployment = _stunnerd()
    pod = deployment["spec"]["template"]
    stunnerd = container(deployment, "stunnerd")
    assert pod["metadata"]["labels"]["app"] == constants.POD_APP_LABEL
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app": constants.POD_APP_LABEL,
        "app.kubernetes.io/instance": "stunner",
    }
    assert stunnerd["image"] == "stunner:0.1.0"
    assert stunnerd["command"] == [
        "stunnerd",
        "-c",
        constants.CONFIG_PATH,
        "-w",
        "--grace-period",
        str(constants.DEFAULT_GRACE_PERIOD),
    ]
    assert pod["spec"]["terminationGracePeriodSeconds"] == constants.DEFAULT_GRACE_PERIOD
    assert stunnerd["env"] == [
        {"name": "STUNNER_ADDR", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    assert stunnerd["volumeMounts"] == [
        {"name": "stunnerd-config", "mountPath": constants.CONFIG_DIR, "readOnly": True}
    ]
    assert pod["spec"]["volumes"] == [
        {
            "name": "stunnerd-config",
            "configMap": {"name": constants.CONFIGMAP_NAME, "optional": True},
        }
    ]
    assert stunnerd["ports"] == [
        {"name": "udp-listener", "containerPort": constants.DEFAULT_PORT, "protocol": "UDP"},
        {"name": "health", "containerPort": constants.DEFAULT_HEALTH_PORT, "protocol": "TCP"},
    ]
    assert stunnerd["livenessProbe"]["httpGet"] == {"path": "/live", "port": "health"}
    assert stunnerd["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_udp_segmentation_offload_off_sets_the_environment_switch() -> None:
    deployment = _stunnerd({"stunner": {"deployment": {"udpSegmentationOffload": False}}})
    env = container(deployment, "stunnerd")["env"]
    assert env[1:] == [{"name": GSO_ENV, "value": "0"}]
    assert env[0]["name"] == "STUNNER_ADDR"


def test_grace_period_value_sets_both_kubernetes_and_stunnerd() -> None:
    deployment = _stunnerd({"stunner": {"deployment": {"terminationGracePeriodSeconds": 120}}})
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    assert container(deployment, "stunnerd")["command"][-2:] == ["--grace-period", "120"]


def test_image_values_apply_to_stunnerd_and_operator() -> None:
    manifests = render_stunner({"image": {"repository": "registry.test/stunner", "tag": "dev"}})
    for name, container_name in (("stunner", "stunnerd"), ("stunner-operator", "stunner-operator")):
        deployment = one(manifests, "Deployment", name)
        assert container(deployment, container_name)["image"] == "registry.test/stunner:dev"


def test_monitoring_enabled_adds_only_the_metrics_port_and_pod_label() -> None:
    default = render_stunner()
    enabled = render_stunner(monitoring_values(enabled=True))
    assert kinds(enabled) == kinds(default)
    changed = [m for m in enabled if m not in default]
    assert [(m["kind"], m["metadata"]["name"]) for m in changed] == [("Deployment", "stunner")]

    deployment = copy.deepcopy(changed[0])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels.pop("stunner.l7mp.io/metrics") == "enabled"
    ports = container(deployment, "stunnerd")["ports"]
    metrics = {
        "name": constants.METRICS_PORT_NAME,
        "containerPort": constants.DEFAULT_METRICS_PORT,
        "protocol": "TCP",
    }
    assert ports[-1] == metrics
    for each in deployment["spec"]["template"]["spec"]["containers"]:
        if each["name"] == "stunnerd":
            each["ports"] = ports[:-1]
    assert deployment == one(default, "Deployment", "stunner")


def test_metrics_stay_off_in_stunnerd_until_metrics_endpoint_is_set() -> None:
    enabled = render_stunner(monitoring_values(enabled=True))
    spec = one(enabled, "GatewayConfig")["spec"]
    assert "metricsEndpoint" not in spec
    endpoint = "http://:8080/metrics"
    values = {"stunner": {"gatewayConfig": {"metricsEndpoint": endpoint}}}
    assert one(render_stunner(values), "GatewayConfig")["spec"]["metricsEndpoint"] == endpoint


def test_gatewayconfig_takes_credentials_from_values() -> None:
    default = one(render_stunner(), "GatewayConfig")
    assert default["metadata"] == {
        **default["metadata"],
        "name": constants.GATEWAYCONFIG_NAME,
        "namespace": NAMESPACE,
    }
    assert default["spec"] == {
        "realm": constants.DEFAULT_REALM,
        "authType": "plaintext",
        "userName": "user-1",
        "password": "pass-1",
        "logLevel": constants.DEFAULT_LOGLEVEL,
    }
    values = {"stunner": {"gatewayConfig": {"userName": "alice", "password": "s3cr3t-X~"}}}
    spec = one(render_stunner(values), "GatewayConfig")["spec"]
    assert (spec["userName"], spec["password"]) == ("alice", "s3cr3t-X~")


def test_longterm_auth_needs_a_shared_secret() -> None:
    values: dict[str, Any] = {"stunner": {"gatewayConfig": {"authType": "longterm"}}}
    with pytest.raises(helm_python.HelmError, match="sharedSecret is needed"):
        render_stunner(values)
    values["stunner"]["gatewayConfig"]["sharedSecret"] = "topsecret"
    spec = one(render_stunner(values), "GatewayConfig")["spec"]
    assert spec["sharedSecret"] == "topsecret"
    assert "userName" not in spec and "password" not in spec


LISTENERS = [
    {"name": "udp", "protocol": "UDP", "port": 3478},
    {"name": "tcp", "protocol": "TCP", "port": 3478},
    {"name": "tls", "protocol": "TLS", "port": 443},
    {"name": "dtls", "protocol": "DTLS", "port": 5349},
]


def test_listeners_become_container_and_service_ports() -> None:
    values = {"stunner": {"listeners": LISTENERS, "service": {"externalTrafficPolicy": "Local"}}}
    manifests = render_stunner(values)
    ports = container(one(manifests, "Deployment", "stunner"), "stunnerd")["ports"]
    transports = ["UDP", "TCP", "TCP", "UDP"]
    assert ports[:4] == [
        {"name": ls["name"], "containerPort": ls["port"], "protocol": transport}
        for ls, transport in zip(LISTENERS, transports, strict=True)
    ]
    service = one(manifests, "Service", "stunner")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["selector"] == {
        "app": constants.POD_APP_LABEL,
        "app.kubernetes.io/instance": "stunner",
    }
    assert service["spec"]["ports"] == [
        {"name": ls["name"], "port": ls["port"], "targetPort": ls["name"], "protocol": transport}
        for ls, transport in zip(LISTENERS, transports, strict=True)
    ]


def test_no_listeners_means_no_service() -> None:
    manifests = render_stunner({"stunner": {"listeners": []}})
    assert ("Service", "stunner") not in kinds(manifests)


def test_optional_gatewayclass_and_gateway_point_at_the_gatewayconfig() -> None:
    assert "Gateway" not in {kind for kind, _ in kinds(render_stunner())}
    values = {"stunner": {"gateway": {"create": True}, "listeners": LISTENERS[:2]}}
    manifests = render_stunner(values)
    gateway_class = one(manifests, "GatewayClass", "stunner-gatewayclass")
    assert gateway_class["spec"]["controllerName"] == constants.CONTROLLER_NAME
    assert gateway_class["spec"]["parametersRef"] == {
        "group": "stunner.l7mp.io",
        "kind": "GatewayConfig",
        "name": constants.GATEWAYCONFIG_NAME,
        "namespace": NAMESPACE,
    }
    gateway = one(manifests, "Gateway", "stunner-gateway")
    assert gateway["metadata"]["namespace"] == NAMESPACE
    assert gateway["spec"] == {
        "gatewayClassName": "stunner-gatewayclass",
        "listeners": LISTENERS[:2],
    }


def test_operator_follows_the_contract() -> None:
    manifests = render_stunner()
    deployment = one(manifests, "Deployment", "stunner-operator")
    operator = container(deployment, "stunner-operator")
    assert operator["command"] == ["stunner-operator"]
    assert operator["env"] == [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    ]
    assert operator["ports"] == [{"name": "healthz", "containerPort": 8081, "protocol": "TCP"}]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    pod = deployment["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "stunner-operator"
    assert pod["metadata"]["labels"]["app"] != constants.POD_APP_LABEL
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == OPERATOR_ROLE
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "stunner-operator", "namespace": NAMESPACE}
    ]


OPERATOR_RULES = [
    (["stunner.l7mp.io"], ["gatewayconfigs"], ["get", "list", "watch", "patch"]),
    (["stunner.l7mp.io"], ["gatewayconfigs/status"], ["get", "patch", "update"]),
    (
        ["gateway.networking.k8s.io"],
        ["gatewayclasses", "gateways", "udproutes"],
        ["get", "list", "watch"],
    ),
    (
        ["gateway.networking.k8s.io"],
        ["gatewayclasses/status", "gateways/status", "udproutes/status"],
        ["patch"],
    ),
    ([""], ["services", "endpoints"], ["get", "list", "watch"]),
    ([""], ["configmaps"], ["get", "list", "watch", "create", "update", "patch"]),
    ([""], ["secrets"], ["get"]),
    ([""], ["pods"], ["list", "patch"]),
    ([""], ["events"], ["create"]),
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
    ([""], ["namespaces"], ["list", "watch"]),
]


def test_operator_rbac_is_exactly_the_contract() -> None:
    rules = one(render_stunner(), "ClusterRole")["rules"]
    assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in rules] == OPERATOR_RULES


def test_operator_can_be_left_out() -> None:
    manifests = render_stunner({"operator": {"enabled": False}})
    assert kinds(manifests) == [
        ("Deployment", "stunner"),
        ("GatewayConfig", constants.GATEWAYCONFIG_NAME),
        ("Service", "stunner"),
    ]


ALL_EXTRAS: dict[str, Any] = {
    "podMonitor": {"enabled": True, "labels": {"release": "kps"}},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
}


def test_existing_prometheus_extras_need_monitoring_enabled() -> None:
    off = render_stunner(monitoring_values(enabled=False, **ALL_EXTRAS))
    assert kinds(off) == kinds(render_stunner())
    on = render_stunner(monitoring_values(enabled=True, **ALL_EXTRAS))
    added = sorted(set(kinds(on)) - set(kinds(off)))
    assert added == [
        ("ConfigMap", "stunner-dashboard"),
        ("PodMonitor", "stunner"),
        ("PrometheusRule", "stunner"),
    ]


def test_existing_prometheus_podmonitor() -> None:
    on = render_stunner(monitoring_values(enabled=True, **ALL_EXTRAS))
    monitor = one(on, "PodMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"] == {
        "jobLabel": "app",
        "selector": POD_MONITOR_SELECTOR,
        "podMetricsEndpoints": [METRICS_ENDPOINT],
    }


def test_existing_prometheus_dashboard_and_rules_are_the_shared_sources() -> None:
    on = render_stunner(monitoring_values(enabled=True, **ALL_EXTRAS))
    dashboard = one(on, "ConfigMap", "stunner-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = (CHARTS / "stunner-prometheus" / "dashboards" / "stunner.json").read_text()
    assert json.loads(dashboard["data"]["stunner.json"]) == json.loads(committed)
    rule = one(on, "PrometheusRule")
    source = yaml.safe_load((CHARTS / "rules" / "stunner-rules.yaml").read_text())
    assert rule["spec"] == source
    assert rule["metadata"]["labels"]["release"] == "kps"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"stunner": {"deplyoment": {}}}, "additional properties 'deplyoment'"),
        (
            {"stunner": {"listeners": [{"name": "x", "protocol": "SCTP", "port": 1}]}},
            "value must be one of",
        ),
        (
            {"stunner": {"listeners": [{"name": "a-very-long-listener", "protocol": "UDP"}]}},
            "listeners/0",
        ),
        (monitoring_values(podMonitor={"interval": "5 seconds"}), "interval"),
        ({"stunner": {"gatewayConfig": {"metricsEndpoint": "tcp://:8080"}}}, "metricsEndpoint"),
        (monitoring_values(enabled="yes"), "enabled"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        render_stunner(values)


def test_helm_engine_lints_strictly_clean() -> None:
    for values in ({}, monitoring_values(enabled=True, **ALL_EXTRAS)):
        report = helm_python.lint(str(STUNNER), values, strict=True, kube_version="v1.25.0")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []
