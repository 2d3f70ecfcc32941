"""The stunner-prometheus chart's own objects, rendered by the Helm engine.

The engine renders a chart whose dependency is absent, so these tests see only this chart's
templates; test_helm_cli.py renders it with a stand-in dependency, and
test_real_dependency.py with the real one when it is at hand.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from stunner import constants
from tests.charts.manifests import (
    METRICS_ENDPOINT,
    POD_MONITOR_SELECTOR,
    PROMETHEUS,
    kinds,
    one,
    render_prometheus,
)

helm_python = pytest.importorskip("helm_python")

STACK = yaml.safe_load((PROMETHEUS / "values.yaml").read_text())["kube-prometheus-stack"]


def test_default_install_objects_all_in_monitoring() -> None:
    manifests = render_prometheus()
    assert kinds(manifests) == [
        ("ConfigMap", "stunner-dashboard"),
        ("Namespace", "monitoring"),
        ("PodMonitor", "stunner"),
        ("PrometheusRule", "stunner"),
        ("Service", "prometheus"),
    ]
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "monitoring", manifest["kind"]


def test_podmonitor_scrapes_the_metrics_port_every_5s() -> None:
    monitor = one(render_prometheus(), "PodMonitor", "stunner")
    assert monitor["spec"] == {
        "jobLabel": "app",
        "namespaceSelector": {"matchNames": ["stunner"]},
        "selector": POD_MONITOR_SELECTOR,
        "podMetricsEndpoints": [METRICS_ENDPOINT],
    }
    # kube-prometheus-stack's Prometheus also finds it under its default release selector.
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_podmonitor_values() -> None:
    values = {"podMonitor": {"interval": "1s", "path": "/stats", "namespaces": ["a", "b"]}}
    monitor = one(render_prometheus(values), "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": constants.METRICS_PORT_NAME, "path": "/stats", "interval": "1s"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}
    everywhere = one(render_prometheus({"podMonitor": {"namespaces": []}}), "PodMonitor")
    assert everywhere["spec"]["namespaceSelector"] == {"any": True}


def test_set_interval_like_the_e2e_harness() -> None:
    """The harness renders with `--set podMonitor.interval=1s` semantics through the engine."""
    values = helm_python.parse_set_string("podMonitor.interval=1s")
    (endpoint,) = one(render_prometheus(values), "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["interval"] == "1s"


def test_prometheus_service_selects_the_stacks_prometheus() -> None:
    service = one(render_prometheus(), "Service", "prometheus")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http-web", "port": 9090, "targetPort": 9090, "protocol": "TCP"}
    ]
    # The labels prometheus-operator puts on the pods of Prometheus <fullname>-prometheus.
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "prometheus",
        "operator.prometheus.io/name": f"{STACK['fullnameOverride']}-prometheus",
    }
    clean = {"kube-prometheus-stack": {"cleanPrometheusOperatorObjectNames": True}}
    selector = one(render_prometheus(clean), "Service")["spec"]["selector"]
    assert selector["operator.prometheus.io/name"] == STACK["fullnameOverride"]


def test_stack_values_name_grafana_and_the_datasource_as_the_docs_say() -> None:
    grafana = STACK["grafana"]
    assert STACK["namespaceOverride"] == grafana["namespaceOverride"] == "monitoring"
    assert grafana["fullnameOverride"] == "grafana"  # Service grafana, port 80 by default
    datasources = grafana["sidecar"]["datasources"]
    assert datasources["name"] == "prometheus"
    assert datasources["isDefaultDatasource"] is True
    assert grafana["sidecar"]["dashboards"]["enabled"] is True
    assert STACK["crds"]["enabled"] is True
    spec = STACK["prometheus"]["prometheusSpec"]
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False


def test_dashboard_configmap_carries_the_sidecar_label_and_datasource() -> None:
    configmap = one(render_prometheus(), "ConfigMap", "stunner-dashboard")
    sidecar = STACK["grafana"]["sidecar"]["dashboards"]
    assert configmap["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    dashboard = json.loads(configmap["data"]["stunner.json"])
    assert dashboard == json.loads((PROMETHEUS / "dashboards" / "stunner.json").read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == STACK["grafana"]["sidecar"]["datasources"]["name"]


def test_rules_are_the_shared_source() -> None:
    rule = one(render_prometheus(), "PrometheusRule", "stunner")
    source = yaml.safe_load((PROMETHEUS.parent / "rules" / "stunner-rules.yaml").read_text())
    assert rule["spec"] == source
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_optional_parts_switch_off() -> None:
    values = {
        "createNamespace": False,
        "dashboard": {"enabled": False},
        "rules": {"enabled": False},
    }
    assert kinds(render_prometheus(values)) == [
        ("PodMonitor", "stunner"),
        ("Service", "prometheus"),
    ]


def test_namespace_follows_the_stack_override() -> None:
    values = {"kube-prometheus-stack": {"namespaceOverride": "observability"}}
    manifests = render_prometheus(values)
    assert one(manifests, "Namespace")["metadata"]["name"] == "observability"
    assert {m["metadata"].get("namespace") for m in manifests} == {None, "observability"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"podMonitor": {"intervall": "1s"}}, "additional properties 'intervall'"),
        ({"podMonitor": {"interval": "1 s"}}, "interval"),
        ({"podMonitor": {"namespaces": ["Bad_NS"]}}, "namespaces"),
        ({"kube-prometheus-stack": {"namespaceOverride": ""}}, "namespaceOverride"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        render_prometheus(values)


def test_dependency_is_pinned_and_chart_lock_is_in_sync() -> None:
    """Chart.lock's digest is Helm's hash of [Chart.yaml deps, lock deps] as compact JSON."""
    declared = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"]
    lock = yaml.safe_load((PROMETHEUS / "Chart.lock").read_text())
    assert [d["name"] for d in declared] == ["kube-prometheus-stack"]
    for dependency in declared:
        assert all(part.isdigit() for part in dependency["version"].split(".")), "not pinned"

    def helm_json(deps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = ("name", "version", "repository")
        return [{k: d[k] for k in keys if k in d} for d in deps]

    payload = json.dumps(
        [helm_json(declared), helm_json(lock["dependencies"])], separators=(",", ":")
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()
    assert lock["digest"] == f"sha256:{digest}"
    assert helm_json(lock["dependencies"]) == helm_json(declared)


def test_readme_says_what_comes_from_where() -> None:
    readme = (PROMETHEUS / "README.md").read_text()
    (dependency,) = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"]
    assert f"{dependency['name']} {dependency['version']}" in readme
    for template in sorted((PROMETHEUS / "templates").glob("*.yaml")):
        assert f"templates/{template.name}" in readme
