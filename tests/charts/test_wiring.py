"""The two charts agree: the PodMonitor selects exactly the stunnerd pods that open the port.

This is what a Prometheus Operator would do with the rendered objects: match the selector
against the pod template's labels, the namespace selector against the release namespace, and
look the endpoint's port name up among the container ports.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from stunner import constants
from tests.charts.manifests import (
    CHARTS,
    Manifest,
    monitoring_values,
    one,
    render_prometheus,
    render_stunner,
)

pytest.importorskip("helm_python")

STUNNER_NAMESPACE = "stunner"  # the spec's --namespace=stunner


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _namespace_selected(monitor: Manifest, namespace: str) -> bool:
    selector = monitor["spec"].get("namespaceSelector", {})
    if selector.get("any"):
        return True
    names = selector.get("matchNames") or [monitor["metadata"]["namespace"]]
    return namespace in names


def _scraped_ports(monitor: Manifest, deployments: list[Manifest]) -> list[tuple[str, int, str]]:
    """(pod app label, container port, path) for every endpoint the monitor would scrape."""
    if not _namespace_selected(monitor, STUNNER_NAMESPACE):
        return []
    scraped = []
    for deployment in deployments:
        pod = deployment["spec"]["template"]
        if not _selects(monitor["spec"]["selector"], pod["metadata"]["labels"]):
            continue
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for ctr in pod["spec"]["containers"]:
                for port in ctr.get("ports", []):
                    if port.get("name") == endpoint["port"]:
                        label = pod["metadata"]["labels"][monitor["spec"]["jobLabel"]]
                        scraped.append((label, port["containerPort"], endpoint["path"]))
    return scraped


def _deployments(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == "Deployment"]


def test_podmonitor_scrapes_stunnerd_on_the_default_metrics_port() -> None:
    monitor = one(render_prometheus(), "PodMonitor")
    deployments = _deployments(render_stunner(monitoring_values(enabled=True)))
    assert _scraped_ports(monitor, deployments) == [
        (constants.POD_APP_LABEL, constants.DEFAULT_METRICS_PORT, constants.METRICS_PATH)
    ]


def test_podmonitor_scrapes_nothing_without_monitoring_enabled() -> None:
    monitor = one(render_prometheus(), "PodMonitor")
    assert _scraped_ports(monitor, _deployments(render_stunner())) == []


def test_podmonitor_in_another_namespace_list_scrapes_nothing() -> None:
    monitor = one(render_prometheus({"podMonitor": {"namespaces": ["media"]}}), "PodMonitor")
    deployments = _deployments(render_stunner(monitoring_values(enabled=True)))
    assert _scraped_ports(monitor, deployments) == []


def test_metrics_port_value_moves_the_scraped_port() -> None:
    monitor = one(render_prometheus(), "PodMonitor")
    deployments = _deployments(render_stunner(monitoring_values(enabled=True, port=9100)))
    assert _scraped_ports(monitor, deployments) == [
        (constants.POD_APP_LABEL, 9100, constants.METRICS_PATH)
    ]


def test_both_podmonitors_scrape_the_same_way() -> None:
    """The stunner chart's optional PodMonitor equals stunner-prometheus's, bar namespaces."""
    ours = one(render_prometheus(), "PodMonitor")["spec"]
    values = monitoring_values(enabled=True, podMonitor={"enabled": True})
    theirs = one(render_stunner(values), "PodMonitor")["spec"]
    assert {k: v for k, v in ours.items() if k != "namespaceSelector"} == theirs


def test_alert_rules_select_the_job_the_podmonitor_produces() -> None:
    """jobLabel: app makes job the pods' app label value, which the alerts filter on."""
    rules = (CHARTS / "rules" / "stunner-rules.yaml").read_text()
    exprs = [rule["expr"] for group in yaml.safe_load(rules)["groups"] for rule in group["rules"]]
    jobs = {job for expr in exprs for job in re.findall(r'job="([^"]*)"', expr)}
    assert jobs == {constants.POD_APP_LABEL}
