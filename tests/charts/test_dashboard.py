"""The STUNner dashboard: generated, complete, well formed, and every query returns data.

The last check runs offline: stunnerd's real exposition (stunner.telemetry) becomes promtool
input series, and each panel query, expanded as Grafana would send it, must not be absent.
The e2e run repeats this against a live Prometheus after real traffic.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.charts.manifests import CHARTS

COMMITTED = [
    CHARTS / chart / "dashboards" / "stunner.json" for chart in ("stunner", "stunner-prometheus")
]
# The contract's metrics (docs/metrics.md) and the process metrics the issue asks for.
STUNNER_METRICS = [
    "stunner_listener_connections",
    "stunner_listener_connections_total",
    "stunner_listener_packets_total",
    "stunner_listener_bytes_total",
    "stunner_cluster_connections",
    "stunner_cluster_connections_total",
    "stunner_cluster_packets_total",
    "stunner_cluster_bytes_total",
    "stunner_allocations_active",
]
PROCESS_METRICS = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generator = _load("stunner_dashboard", CHARTS / "dashboards" / "stunner_dashboard.py")
generate = _load("charts_generate", CHARTS / "generate.py")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(COMMITTED[1].read_text()))


def test_committed_files_equal_the_generator_output() -> None:
    for path, text in generate.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run python charts/generate.py"
    assert generate.main(["--check"]) == 0
    assert set(COMMITTED) <= set(generate.outputs())


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return list(generator.panel_queries(dashboard))


def test_every_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    text = " ".join(expr for _, expr in _queries(dashboard))
    for metric in STUNNER_METRICS + PROCESS_METRICS:
        assert re.search(rf"\b{metric}\b", text), metric


# Families of a stunnerd process, not of a listener: no name label to filter on.
INSTANCE_METRICS = re.compile(
    r"stunner_(config_last_reload_\w+|draining|allocations_limit|build_info)\b"
)


def test_stunner_queries_are_per_listener_and_filtered(dashboard: dict[str, Any]) -> None:
    for title, expr in _queries(dashboard):
        per_listener = INSTANCE_METRICS.sub("", expr)
        if "stunner_" in per_listener and "process_" not in expr and "python_" not in expr:
            assert 'name=~"$listener"' in expr, title
            if "per listener" in title:
                assert "sum by (name" in expr, title
            if "_total" in expr:
                assert "rate(" in expr and "[$__rate_interval]" in expr, title


def test_rx_and_tx_rates_for_packets_and_bytes_on_both_sides(dashboard: dict[str, Any]) -> None:
    for side in ("listener", "cluster"):
        for what in ("packets", "bytes"):
            metric = f"stunner_{side}_{what}_total"
            exprs = [e for _, e in _queries(dashboard) if metric in e and "direction" in e]
            assert exprs, metric


def test_datasource_and_listener_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "listener"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "prometheus"
    listener = variables["listener"]
    assert listener["query"]["query"] == "label_values(stunner_listener_connections, name)"
    assert (listener["multi"], listener["includeAll"], listener["allValue"]) == (True, True, ".*")
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_layout_has_unique_ids_and_no_overlaps(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps"
        cells |= mine
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(set(refs)) == len(refs)


def test_expand_substitutes_grafana_variables() -> None:
    expr = 'sum by (name) (rate(stunner_listener_bytes_total{name=~"$listener"}[$__rate_interval]))'
    assert generator.expand(expr, listener="a|b", rate_interval="30s") == (
        'sum by (name) (rate(stunner_listener_bytes_total{name=~"a|b"}[30s]))'
    )


def _exposition_series() -> list[dict[str, str]]:
    """stunnerd's metrics for one listener, as promtool input series of a scraped target."""
    telemetry = pytest.importorskip("stunner.telemetry")
    from prometheus_client.parser import text_string_to_metric_families

    from stunner.capacity import CapacityCollector
    from stunner.readiness import ReadinessCollector, ReloadStatus
    from tests.support import numbered_sample

    stats = numbered_sample(1)
    registry = telemetry.build_registry(lambda: [("stunner/gw/udp", stats)])
    registry.register(ReadinessCollector(ReloadStatus(), lambda: [("stunner/gw/udp", None)]))
    registry.register(CapacityCollector(lambda: None))
    text = telemetry.exposition(registry)
    series = []
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = {**sample.labels, "job": "stunner", "instance": "10.0.0.1:8080"}
            selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            step = f"{max(sample.value, 1.0):.3f}"
            values = f"0+{step}x20" if family.type == "counter" else f"{sample.value:.3f}x20"
            series.append({"series": f"{sample.name}{{{selector}}}", "values": values})
    return series


def test_every_panel_query_returns_data_from_stunnerd_metrics(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    queries = [generator.expand(expr) for _, expr in _queries(dashboard)]
    rules = [{"alert": f"Query{i}", "expr": f"absent({q})"} for i, q in enumerate(queries)]
    # Control: a query for a metric stunnerd does not export is reported as empty.
    rules.append({"alert": "Control", "expr": "absent(stunner_no_such_metric)"})
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    cases: list[dict[str, Any]] = [
        {"alertname": f"Query{i}", "eval_time": "4m", "exp_alerts": []} for i in range(len(queries))
    ]
    cases.append({"alertname": "Control", "eval_time": "4m", "exp_alerts": [{"exp_labels": {}}]})
    test = {
        "rule_files": ["queries.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {"interval": "15s", "input_series": _exposition_series(), "alert_rule_test": cases}
        ],
    }
    (tmp_path / "queries.test.yaml").write_text(yaml.safe_dump(test))
    done = subprocess.run(
        [promtool, "test", "rules", "queries.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    failed = [
        queries[int(i)] for i in re.findall(r"alertname: Query(\d+),", done.stdout + done.stderr)
    ]
    assert done.returncode == 0, f"queries without data: {failed}\n{done.stdout}{done.stderr}"
    assert len(queries) == sum(len(p.get("targets", [])) for p in dashboard["panels"])
