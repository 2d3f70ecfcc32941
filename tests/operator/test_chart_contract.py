"""The pod contract in docs/kubernetes.md, checked on the stunner chart as helm renders it
(the chart is another helper's; this only reads it). Skips when no helm binary is at hand."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stunner import constants as c
from stunner.operator.spec import parse_spec
from tests.charts.helm import find_helm

from .fake_api import merge_patch
from .test_crd import SPEC_PATCH
from .test_rbac import documented

ROOT = Path(__file__).resolve().parents[2]
# Rules docs/kubernetes.md marks NEW: asked of the chart, not part of the first promise.
NEW_RESOURCES = {"secrets", "pods"}


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    helm = find_helm()
    if helm is None:
        pytest.skip("no helm binary (python tests/charts/helm.py fetch)")
    args = [str(helm), "template", "stunner", "charts/stunner", "--namespace=stunner"]
    args += ["--set", "stunner.deployment.monitoring.enabled=true", "--include-crds"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_chart_ships_this_crd(chart: list[dict[str, Any]]) -> None:
    crd = one(chart, "CustomResourceDefinition", "gatewayconfigs.stunner.l7mp.io")
    path = ROOT / "charts/stunner/crds/stunner.l7mp.io_gatewayconfigs.yaml"
    assert crd == yaml.safe_load(path.read_text())


def test_charts_gatewayconfig_is_accepted_before_and_after_the_patch(
    chart: list[dict[str, Any]],
) -> None:
    crd = one(chart, "CustomResourceDefinition", "gatewayconfigs.stunner.l7mp.io")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    gc = one(chart, "GatewayConfig", c.GATEWAYCONFIG_NAME)
    for obj in (gc, merge_patch(gc, SPEC_PATCH)):
        jsonschema.Draft7Validator(schema).validate(obj)
        parse_spec(obj)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (ctr,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(ctr)


def test_stunnerd_pod(chart: list[dict[str, Any]]) -> None:
    dep = [
        d
        for d in chart
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"].get("app") == c.POD_APP_LABEL
    ]
    (stunnerd,) = dep
    pod = stunnerd["spec"]["template"]["spec"]
    ctr = container(stunnerd)
    assert ctr["image"] == "stunner:0.1.0"
    cmd = ctr["command"]
    assert cmd[:4] == ["stunnerd", "-c", c.CONFIG_PATH, "-w"]
    grace = int(cmd[cmd.index("--grace-period") + 1]) if "--grace-period" in cmd else 3600
    assert pod["terminationGracePeriodSeconds"] == grace == c.DEFAULT_GRACE_PERIOD
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"] == {"name": c.CONFIGMAP_NAME, "optional": True}
    (mount,) = [m for m in ctr["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == c.CONFIG_DIR
    env = {e["name"]: e for e in ctr["env"]}
    assert env["STUNNER_ADDR"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    ports = {p.get("name"): p["containerPort"] for p in ctr["ports"]}
    assert ports["metrics"] == c.DEFAULT_METRICS_PORT
    assert c.DEFAULT_HEALTH_PORT in ports.values()
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        get = ctr[probe]["httpGet"]
        port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
        assert (get["path"], port) == (path, c.DEFAULT_HEALTH_PORT)


def test_operator_pod(chart: list[dict[str, Any]]) -> None:
    dep = one(chart, "Deployment", "stunner-operator")
    ctr = container(dep)
    assert ctr["image"] == "stunner:0.1.0"
    assert ctr["command"] == ["stunner-operator"]
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    get = ctr["livenessProbe"]["httpGet"]
    ports = {p.get("name"): p["containerPort"] for p in ctr["ports"]}
    assert get["path"] == "/healthz"
    assert (get["port"] if isinstance(get["port"], int) else ports[get["port"]]) == 8081
    assert dep["spec"]["replicas"] == 1


def test_cluster_role_grants_the_documented_rules(chart: list[dict[str, Any]]) -> None:
    (role,) = [d for d in chart if d["kind"] == "ClusterRole"]
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    missing = {x for x in documented() - granted if x[1] not in NEW_RESOURCES}
    assert not missing, f"the chart's ClusterRole lacks {sorted(missing)}"
