"""Rendering charts with the Helm engine (helm-python-sdk) and picking objects out of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from stunner import constants

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
STUNNER = CHARTS / "stunner"
PROMETHEUS = CHARTS / "stunner-prometheus"

Manifest = dict[str, Any]

# What every PodMonitor for stunnerd holds: the pods the stunner chart labels when monitoring is
# enabled, and the metrics endpoint by stunner.constants.
POD_MONITOR_SELECTOR = {
    "matchLabels": {"app": constants.POD_APP_LABEL, "stunner.l7mp.io/metrics": "enabled"}
}
METRICS_ENDPOINT = {
    "port": constants.METRICS_PORT_NAME,
    "path": constants.METRICS_PATH,
    "interval": constants.SCRAPE_INTERVAL,
}


def parse(texts: Iterable[str]) -> list[Manifest]:
    """Every YAML document that is an object (empty templates render to nothing)."""
    return [doc for text in texts for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def render(
    chart: Path, values: dict[str, Any] | None = None, *, namespace: str, name: str
) -> list[Manifest]:
    """The chart's objects as `helm template` would print them, NOTES.txt left out."""
    import helm_python

    with helm_python.Chart.load(str(chart)) as loaded:
        rendered = loaded.render(values or {}, name=name, namespace=namespace)
    return parse(text for path, text in rendered.items() if not path.endswith("NOTES.txt"))


def render_stunner(values: dict[str, Any] | None = None) -> list[Manifest]:
    return render(STUNNER, values, namespace="stunner", name="stunner")


def render_prometheus(values: dict[str, Any] | None = None) -> list[Manifest]:
    return render(PROMETHEUS, values, namespace="default", name="prometheus")


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((m["kind"], m["metadata"]["name"]) for m in manifests)


def container(deployment: Manifest, name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (found,) = (c for c in containers if c["name"] == name)
    return dict(found)


def monitoring_values(**monitoring: Any) -> dict[str, Any]:
    """stunner chart values with stunner.deployment.monitoring set."""
    return {"stunner": {"deployment": {"monitoring": monitoring}}}
