"""Where the local Prometheus scrapes: the stunner-prometheus chart's PodMonitor, or constants.

The local target must scrape what a cluster install would scrape, so the port, path and
interval are read from the rendered chart (with `podMonitor.interval=1s` to keep runs short).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.netutil import parse_duration
from stunner import constants

log = logging.getLogger(__name__)

CHART_DIR = Path(__file__).resolve().parent.parent / "charts" / "stunner-prometheus"
E2E_INTERVAL = "1s"
CHART_VALUES: dict[str, Any] = {"podMonitor": {"interval": E2E_INTERVAL}}


@dataclass(frozen=True)
class ScrapeSpec:
    """What Prometheus scrapes on each stunnerd, and which source said so."""

    port: int
    path: str
    interval: str
    job: str
    source: str

    @property
    def interval_s(self) -> float:
        return parse_duration(self.interval)


def _port_number(port: object) -> int:
    """A PodMonitor `port` is a container port name; the stunner chart names 8080 'metrics'."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    if port == constants.METRICS_PORT_NAME:
        return constants.DEFAULT_METRICS_PORT
    raise ValueError(f"PodMonitor port {port!r} is not {constants.METRICS_PORT_NAME!r}")


def _render_chart(chart_dir: Path) -> list[dict[str, Any]]:
    import helm_python

    manifests = helm_python.Chart.load(str(chart_dir)).render(
        CHART_VALUES, name="prometheus", namespace="monitoring"
    )
    docs: list[dict[str, Any]] = []
    for path, text in manifests.items():
        if path.endswith((".yaml", ".yml")):  # not NOTES.txt
            docs.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
    return docs


def from_manifests(docs: list[dict[str, Any]], source: str) -> ScrapeSpec:
    """The first endpoint of the PodMonitor that selects stunner pods."""
    monitors = [d for d in docs if d.get("kind") == "PodMonitor"]
    if not monitors:
        raise LookupError("no PodMonitor in the rendered chart")
    monitor = monitors[0]
    spec = monitor["spec"]
    endpoint = spec["podMetricsEndpoints"][0]
    # prometheus-operator sets job from the pod label named by jobLabel (the stunner pods'
    # app label), else "<namespace>/<podmonitor name>".
    pod_labels = spec.get("selector", {}).get("matchLabels", {})
    job = pod_labels.get(spec.get("jobLabel", ""), constants.POD_APP_LABEL)
    return ScrapeSpec(
        port=_port_number(endpoint.get("port")),
        path=str(endpoint.get("path") or constants.METRICS_PATH),
        interval=str(endpoint.get("interval") or E2E_INTERVAL),
        job=str(job),
        source=f"{source} (PodMonitor {monitor['metadata'].get('name')})",
    )


def from_constants() -> ScrapeSpec:
    """The fallback while the chart does not exist: the same values from stunner.constants."""
    return ScrapeSpec(
        port=constants.DEFAULT_METRICS_PORT,
        path=constants.METRICS_PATH,
        interval=E2E_INTERVAL,
        job=constants.POD_APP_LABEL,
        source="stunner/constants.py (chart not renderable), interval overridden to 1s",
    )


def scrape_spec(chart_dir: Path = CHART_DIR) -> ScrapeSpec:
    """Render the chart if possible, else fall back to constants; log which was used."""
    spec: ScrapeSpec
    if not (chart_dir / "Chart.yaml").is_file():
        log.warning("scrape config: %s has no Chart.yaml", chart_dir)
        spec = from_constants()
    else:
        try:
            spec = from_manifests(_render_chart(chart_dir), f"helm render {chart_dir.name}")
        except Exception as exc:  # an unfinished chart must not stop the harness
            log.warning("scrape config: rendering %s failed: %s", chart_dir, exc)
            spec = from_constants()
    log.warning(
        "scrape config from %s: port %d path %s interval %s",
        spec.source,
        spec.port,
        spec.path,
        spec.interval,
    )
    return spec
