"""The charts through the real helm v3 binary: lint --strict, dependency build, template.

stunner-prometheus is built against a local STAND-IN for kube-prometheus-stack (see
conftest.py): these tests prove the chart, its Chart.lock and its own templates, not the
community chart's objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stunner import constants
from tests.charts.conftest import STANDIN_MARKER, Helm
from tests.charts.manifests import PROMETHEUS, STUNNER, kinds, one, parse, render_stunner

SETS = {
    "default": [],
    "monitoring": [
        "--set",
        "stunner.deployment.monitoring.enabled=true",
        "--set",
        "stunner.deployment.monitoring.podMonitor.enabled=true",
        "--set",
        "stunner.deployment.monitoring.grafanaDashboard.enabled=true",
        "--set",
        "stunner.deployment.monitoring.prometheusRule.enabled=true",
        "--set",
        "stunner.gateway.create=true",
    ],
}


@pytest.mark.parametrize("kube_version", ["1.25.0", "1.37.0"])
@pytest.mark.parametrize("values", sorted(SETS))
def test_stunner_lints_strictly(helm: Helm, values: str, kube_version: str) -> None:
    done = helm.run("lint", "--strict", "--kube-version", kube_version, str(STUNNER), *SETS[values])
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_lint_fails_on_a_bad_value(helm: Helm) -> None:
    done = helm.run(
        "lint", "--strict", str(STUNNER), "--set", "stunner.listeners[0].port=0", check=False
    )
    assert done.returncode != 0
    assert "port" in done.stdout + done.stderr


def test_spec_install_command_renders_what_the_engine_renders(helm: Helm) -> None:
    """The spec's `helm install stunner ... --set stunner.deployment.monitoring.enabled=true`."""
    done = helm.run(
        "template",
        "stunner",
        str(STUNNER),
        "--namespace=stunner",
        "--set",
        "stunner.deployment.monitoring.enabled=true",
    )
    by_binary = parse([done.stdout])
    by_engine = render_stunner({"stunner": {"deployment": {"monitoring": {"enabled": True}}}})
    assert sorted(map(str, by_binary)) == sorted(map(str, by_engine))
    ports = one(by_binary, "Deployment", "stunner")["spec"]["template"]["spec"]["containers"][0][
        "ports"
    ]
    assert {
        "name": "metrics",
        "containerPort": constants.DEFAULT_METRICS_PORT,
        "protocol": "TCP",
    } in ports


def test_prometheus_chart_needs_its_dependency_built(helm: Helm, tmp_path: Path) -> None:
    done = helm.run("template", "prometheus", str(PROMETHEUS), check=False)
    if (PROMETHEUS / "charts").is_dir():
        pytest.skip("charts/stunner-prometheus/charts/ exists in this checkout")
    assert done.returncode != 0
    assert "kube-prometheus-stack" in done.stderr


def test_dependency_build_uses_the_committed_lock(built_prometheus_chart: Path, helm: Helm) -> None:
    listing = helm.run("dependency", "list", str(built_prometheus_chart)).stdout
    rows = [[cell.strip() for cell in line.split("\t")] for line in listing.splitlines()[1:]]
    (dependency,) = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"]
    assert [row for row in rows if row != [""]] == [
        [dependency["name"], dependency["version"], dependency["repository"], "ok"]
    ]


def test_dependency_build_refuses_a_stale_lock(helm: Helm, stack_repo: str, tmp_path: Path) -> None:
    copy = tmp_path / PROMETHEUS.name
    shutil.copytree(PROMETHEUS, copy, ignore=shutil.ignore_patterns("charts"))
    chart = yaml.safe_load((copy / "Chart.yaml").read_text())
    chart["dependencies"][0]["version"] = "88.5.2"
    (copy / "Chart.yaml").write_text(yaml.safe_dump(chart))
    done = helm.run("dependency", "build", "--skip-refresh", str(copy), check=False)
    assert done.returncode != 0
    assert "out of sync" in done.stderr


@pytest.mark.parametrize("kube_version", ["1.25.0", "1.37.0"])
def test_built_prometheus_chart_lints_strictly(
    built_prometheus_chart: Path, helm: Helm, kube_version: str
) -> None:
    for extra in ([], ["--set", "podMonitor.interval=1s", "--set", "dashboard.enabled=false"]):
        done = helm.run(
            "lint", "--strict", "--kube-version", kube_version, str(built_prometheus_chart), *extra
        )
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_spec_prometheus_install_command_renders(built_prometheus_chart: Path, helm: Helm) -> None:
    """The spec's `helm install prometheus stunner/stunner-prometheus`, plus an e2e-style --set."""
    default = parse([helm.run("template", "prometheus", str(built_prometheus_chart)).stdout])
    ours = [
        m
        for m in default
        if (m["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == PROMETHEUS.name
        or m["metadata"]["name"] == STANDIN_MARKER
    ]
    assert kinds(ours) == [
        ("ConfigMap", STANDIN_MARKER),
        ("ConfigMap", "stunner-dashboard"),
        ("Namespace", "monitoring"),
        ("PodMonitor", "stunner"),
        ("PrometheusRule", "stunner"),
        ("Service", "prometheus"),
    ]
    # The dependency received this chart's values for it: it renders into monitoring.
    assert one(default, "ConfigMap", STANDIN_MARKER)["metadata"]["namespace"] == "monitoring"
    (endpoint,) = one(default, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["interval"] == constants.SCRAPE_INTERVAL

    fast = helm.run(
        "template", "prometheus", str(built_prometheus_chart), "--set", "podMonitor.interval=1s"
    ).stdout
    (endpoint,) = one(parse([fast]), "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint == {
        "port": constants.METRICS_PORT_NAME,
        "path": constants.METRICS_PATH,
        "interval": "1s",
    }


def test_dependency_build_needs_the_repository_added(helm: Helm, tmp_path: Path) -> None:
    """Why the quick start runs `helm repo add prometheus-community ...` first: with a fresh
    helm home, `helm dependency build` refuses the pinned repository URL before any download."""
    fresh = Helm(helm.binary, tmp_path / "fresh-home")
    copy = tmp_path / PROMETHEUS.name
    shutil.copytree(PROMETHEUS, copy, ignore=shutil.ignore_patterns("charts"))
    done = fresh.run("dependency", "build", "--skip-refresh", str(copy), check=False)
    (dependency,) = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"]
    assert done.returncode != 0
    assert f"no repository definition for {dependency['repository']}" in done.stderr
