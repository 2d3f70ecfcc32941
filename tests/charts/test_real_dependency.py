"""stunner-prometheus with the REAL kube-prometheus-stack, when its archive is at hand.

Opt-in: set STUNNER_CHART_DEPS to a directory holding kube-prometheus-stack-<pinned>.tgz
(for example the `charts/` directory left by `helm dependency build` on a machine with
network). Without it these tests skip: the pinned remote chart cannot be fetched here.
They replay Helm's install order over the real release (its hooks, not the stand-in's), and
check what the stand-in cannot: the names, ports and namespace the spec's one-liners use, the
Grafana datasource, that the Prometheus selects our PodMonitor and rules, and that our custom
resources match the operator CRDs the dependency ships.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.charts.conftest import Helm
from tests.charts.install_order import CrdLoader, plan, replay, template
from tests.charts.manifests import PROMETHEUS, Manifest, one, parse

DEPENDENCY = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"][0]
ARCHIVE = f"{DEPENDENCY['name']}-{DEPENDENCY['version']}.tgz"


@pytest.fixture(scope="module")
def archive() -> Path:
    directory = os.environ.get("STUNNER_CHART_DEPS")
    if not directory or not (Path(directory) / ARCHIVE).is_file():
        pytest.skip(f"set STUNNER_CHART_DEPS to a directory with {ARCHIVE} to run these")
    return Path(directory) / ARCHIVE


@pytest.fixture(scope="module")
def real_chart(archive: Path, helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("real") / PROMETHEUS.name
    shutil.copytree(PROMETHEUS, copy, ignore=shutil.ignore_patterns("charts"))
    (copy / "charts").mkdir()
    shutil.copy(archive, copy / "charts")
    helm.run("lint", "--strict", str(copy))
    return copy


@pytest.fixture(scope="module")
def rendered(real_chart: Path, helm: Helm) -> list[Manifest]:
    return parse([helm.run("template", "prometheus", str(real_chart)).stdout])


def test_spec_command_installs_on_a_fresh_cluster(real_chart: Path, helm: Helm) -> None:
    """Helm's install order replayed over the real release (see test_install_order.py)."""
    steps = plan(helm, template(helm, real_chart))
    hooks_in_monitoring = [
        s for s in steps if s.phase == "pre-install" and s.key[1] == "monitoring"
    ]
    assert hooks_in_monitoring, "the real chart's webhook hooks are what this test is about"
    assert replay(steps) == []


def _crd_schemas(archive: Path) -> dict[str, dict[str, Any]]:
    schemas = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            # Helm installs a chart's crds/ files verbatim; templates are elsewhere.
            if Path(member.name).parent.name == "crds" and member.name.endswith(".yaml"):
                handle = tar.extractfile(member)
                assert handle is not None
                for crd in yaml.load_all(handle.read(), Loader=CrdLoader):
                    if crd and crd.get("kind") == "CustomResourceDefinition":
                        for version in crd["spec"]["versions"]:
                            if version["name"] == "v1":
                                kind = crd["spec"]["names"]["kind"]
                                schemas[kind] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_everything_lands_in_monitoring(rendered: list[Manifest]) -> None:
    namespaces = {m["metadata"].get("namespace") for m in rendered if m["kind"] != "Namespace"}
    assert namespaces - {None} == {"monitoring"}
    one(rendered, "Namespace", "monitoring")


def test_spec_services_grafana_80_and_prometheus_9090(rendered: list[Manifest]) -> None:
    grafana = one(rendered, "Service", "grafana")
    assert [p["port"] for p in grafana["spec"]["ports"]] == [80]
    prometheus = one(rendered, "Service", "prometheus")
    assert [p["port"] for p in prometheus["spec"]["ports"]] == [9090]
    (instance,) = [m for m in rendered if m["kind"] == "Prometheus"]
    assert prometheus["spec"]["selector"] == {
        "app.kubernetes.io/name": "prometheus",
        "operator.prometheus.io/name": instance["metadata"]["name"],
    }


def test_prometheus_selects_our_podmonitor_and_rules(rendered: list[Manifest]) -> None:
    (instance,) = [m for m in rendered if m["kind"] == "Prometheus"]
    spec = instance["spec"]
    for kind in ("podMonitor", "rule"):
        assert spec[f"{kind}Selector"] == {}, kind
        assert spec[f"{kind}NamespaceSelector"] == {}, kind


def test_grafana_datasource_is_prometheus(rendered: list[Manifest]) -> None:
    configmaps = [
        m for m in rendered if m["kind"] == "ConfigMap" and "datasource.yaml" in m.get("data", {})
    ]
    (configmap,) = configmaps
    (source,) = yaml.safe_load(configmap["data"]["datasource.yaml"])["datasources"]
    assert (source["name"], source["type"], source["isDefault"]) == (
        "prometheus",
        "prometheus",
        True,
    )
    assert source["url"].startswith("http://") and ".monitoring:9090" in source["url"]
    assert source["jsonData"]["timeInterval"] == "5s"


def test_grafana_sidecar_picks_up_our_dashboard(rendered: list[Manifest]) -> None:
    deployment = one(rendered, "Deployment", "grafana")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (sidecar,) = [c for c in containers if c["name"] == "grafana-sc-dashboard"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    labels = one(rendered, "ConfigMap", "stunner-dashboard")["metadata"]["labels"]
    assert labels[env["LABEL"]] == env["LABEL_VALUE"]


def test_our_custom_resources_match_the_shipped_crds(
    rendered: list[Manifest], archive: Path
) -> None:
    schemas = _crd_schemas(archive)
    checked = 0
    for kind in ("PodMonitor", "PrometheusRule"):
        for manifest in rendered:
            if manifest["kind"] == kind and manifest["metadata"]["name"] == "stunner":
                jsonschema.Draft7Validator(schemas[kind]).validate(manifest)
                checked += 1
    assert checked == 2
