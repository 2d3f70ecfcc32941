"""The STUNner Grafana dashboard, built from a short table of panels.

Writing the panels as data keeps the JSON consistent (one datasource, one listener filter, one
grid) and lets the e2e harness run every panel's query against a live Prometheus through
``panel_queries`` and ``expand``. ``python charts/generate.py`` writes the JSON into the charts.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_NAME = "prometheus"
LISTENER = 'name=~"$listener"'
RATE = "[$__rate_interval]"
# Process metrics of the targets that export STUNner metrics, whatever their job is called.
STUNNER_TARGETS = "and on (job, instance) group by (job, instance) (stunner_allocations_active)"

WIDTH = 24


@dataclass(frozen=True)
class Panel:
    """One panel: queries as (PromQL, legend) pairs, drawn as a time series or a stat."""

    title: str
    description: str
    unit: str
    targets: tuple[tuple[str, str], ...]
    kind: str = "timeseries"


def _per_listener(metric: str, by: str = "name") -> str:
    return f"sum by ({by}) ({metric}{{{LISTENER}}})"


def _rate_per_listener(metric: str, by: str = "name") -> str:
    return f"sum by ({by}) (rate({metric}{{{LISTENER}}}{RATE}))"


def _process(expr: str) -> str:
    return f"{expr} {STUNNER_TARGETS}"


def _traffic(title: str, description: str, side: str, what: str) -> Panel:
    """A panel of rx and tx rates of ``stunner_<side>_<what>_total`` per listener."""
    expr = _rate_per_listener(f"stunner_{side}_{what}_total", by="name, direction")
    unit = "Bps" if what == "bytes" else "pps"
    return Panel(title, description, unit, ((expr, "{{name}} {{direction}}"),))


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Overview",
        (
            Panel(
                "Active allocations",
                "TURN allocations open now on the selected listeners, all pods.",
                "short",
                ((f"sum(stunner_allocations_active{{{LISTENER}}})", "allocations"),),
                kind="stat",
            ),
            Panel(
                "Client connections",
                "Active downstream connections: TCP/TLS connections, or UDP clients that hold "
                "an allocation.",
                "short",
                ((f"sum(stunner_listener_connections{{{LISTENER}}})", "connections"),),
                kind="stat",
            ),
            Panel(
                "Peer connections",
                "Active upstream connections: relay sockets towards the media backends.",
                "short",
                ((f"sum(stunner_cluster_connections{{{LISTENER}}})", "connections"),),
                kind="stat",
            ),
            Panel(
                "Relayed traffic",
                "Bytes a second sent to and received from peers, both directions.",
                "Bps",
                ((f"sum(rate(stunner_cluster_bytes_total{{{LISTENER}}}{RATE}))", "relayed"),),
                kind="stat",
            ),
        ),
    ),
    (
        "Listeners: client side",
        (
            Panel(
                "Active connections per listener",
                "stunner_listener_connections: downstream connections open now.",
                "short",
                ((_per_listener("stunner_listener_connections"), "{{name}}"),),
            ),
            Panel(
                "Active allocations per listener",
                "stunner_allocations_active: TURN allocations open now.",
                "short",
                ((_per_listener("stunner_allocations_active"), "{{name}}"),),
            ),
            Panel(
                "New connections per listener",
                "Rate of stunner_listener_connections_total: downstream connections opened.",
                "cps",
                ((_rate_per_listener("stunner_listener_connections_total"), "{{name}}"),),
            ),
            _traffic(
                "Packets per listener",
                "Rate of stunner_listener_packets_total: datagrams or framed messages, rx and tx.",
                "listener",
                "packets",
            ),
            _traffic(
                "Bytes per listener",
                "Rate of stunner_listener_bytes_total: bytes received and sent, rx and tx.",
                "listener",
                "bytes",
            ),
        ),
    ),
    (
        "Clusters: peer side",
        (
            Panel(
                "Active peer connections per listener",
                "stunner_cluster_connections: relay sockets open now on behalf of the listener.",
                "short",
                ((_per_listener("stunner_cluster_connections"), "{{name}}"),),
            ),
            Panel(
                "New peer connections per listener",
                "Rate of stunner_cluster_connections_total: relay sockets opened.",
                "cps",
                ((_rate_per_listener("stunner_cluster_connections_total"), "{{name}}"),),
            ),
            _traffic(
                "Peer packets per listener",
                "Rate of stunner_cluster_packets_total: datagrams to (tx) and from (rx) peers.",
                "cluster",
                "packets",
            ),
            _traffic(
                "Peer bytes per listener",
                "Rate of stunner_cluster_bytes_total: payload bytes to (tx) and from (rx) peers.",
                "cluster",
                "bytes",
            ),
        ),
    ),
    (
        "Refusals and errors",
        (
            Panel(
                "Error answers by code",
                "Rate of stunner_turn_responses_total without successes, by code: 401 is the "
                "normal first answer to every Allocate; a rise of 401 beyond successful "
                "Allocates is wrong credentials, 403 a refused peer, 486/508 a full quota.",
                "reqps",
                (
                    (
                        "sum by (name, code) (rate(stunner_turn_responses_total"
                        f'{{{LISTENER},code!="200"}}{RATE}))',
                        "{{name}} {{code}}",
                    ),
                ),
            ),
            Panel(
                "Answers by method",
                "Rate of stunner_turn_responses_total by TURN method and code, successes "
                "(code 200) included.",
                "reqps",
                (
                    (
                        _rate_per_listener("stunner_turn_responses_total", by="name, method, code"),
                        "{{name}} {{method}} {{code}}",
                    ),
                ),
            ),
            Panel(
                "Listener readiness",
                "stunner_listener_ready: 1 while a configured listener serves, 0 when it does "
                "not (its port is taken, say); the lowest over the pods.",
                "short",
                ((f"min by (name) (stunner_listener_ready{{{LISTENER}}})", "{{name}}"),),
            ),
            Panel(
                "Config reloads and draining",
                "stunner_config_last_reload_successful (1: the last reload applied) and "
                "stunner_draining (1: a graceful shutdown is waiting for allocations).",
                "short",
                (
                    (
                        "stunner_config_last_reload_successful",
                        "{{instance}} last reload ok",
                    ),
                    ("stunner_draining", "{{instance}} draining"),
                ),
            ),
        ),
    ),
    (
        "Drops",
        (
            Panel(
                "Dropped packets by reason",
                "Rate of stunner_dropped_packets_total: datagrams or frames that entered and "
                "were neither relayed nor answered, by reason (docs/metrics.md).",
                "pps",
                (
                    (
                        _rate_per_listener("stunner_dropped_packets_total", by="name, reason"),
                        "{{name}} {{reason}}",
                    ),
                ),
            ),
            Panel(
                "Dropped bytes by reason",
                "Rate of stunner_dropped_bytes_total, by reason.",
                "Bps",
                (
                    (
                        _rate_per_listener("stunner_dropped_bytes_total", by="name, reason"),
                        "{{name}} {{reason}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Allocation lifetimes",
        (
            Panel(
                "Allocation lifetime quantiles",
                "How long the allocations that ended lived: median and 90th percentile, from "
                "the stunner_allocation_duration_seconds histogram.",
                "s",
                tuple(
                    (
                        f"histogram_quantile({q}, "
                        + _rate_per_listener(
                            "stunner_allocation_duration_seconds_bucket", by="name, le"
                        )
                        + ")",
                        f"{{{{name}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
            ),
            Panel(
                "Allocations ended by reason",
                "Rate of stunner_allocations_deleted_total: refresh0 (the client hung up), "
                "expired (it vanished), connection_closed, listener_removed, shutdown.",
                "ops",
                (
                    (
                        _rate_per_listener("stunner_allocations_deleted_total", by="name, reason"),
                        "{{name}} {{reason}}",
                    ),
                ),
            ),
            Panel(
                "Allocations against their limit",
                "Active allocations of each pod beside stunner_allocations_limit (0: no "
                "limit); relay ports per listener are stunner_listener_relay_ports.",
                "short",
                (
                    (
                        f"sum by (instance) (stunner_allocations_active{{{LISTENER}}})",
                        "{{instance}} active",
                    ),
                    ("stunner_allocations_limit", "{{instance}} limit"),
                ),
            ),
        ),
    ),
    (
        "stunnerd processes",
        (
            Panel(
                "CPU",
                "CPU time per second; one stunnerd process relays on one core, so 100% is full.",
                "percentunit",
                ((_process(f"rate(process_cpu_seconds_total{RATE})"), "{{instance}}"),),
            ),
            Panel(
                "Memory",
                "Resident and virtual memory of each stunnerd process.",
                "bytes",
                (
                    (_process("process_resident_memory_bytes"), "{{instance}} resident"),
                    (_process("process_virtual_memory_bytes"), "{{instance}} virtual"),
                ),
            ),
            Panel(
                "Open file descriptors",
                "Each allocation holds a relay socket; the limit is process_max_fds.",
                "short",
                ((_process("process_open_fds"), "{{instance}}"),),
            ),
            Panel(
                "Threads and asyncio tasks",
                "The Python counterparts of go_threads and go_goroutines.",
                "short",
                (
                    (_process("python_threads"), "{{instance}} threads"),
                    (_process("python_asyncio_tasks"), "{{instance}} tasks"),
                ),
            ),
        ),
    ),
)


def _targets(panel: Panel) -> list[dict[str, object]]:
    return [
        {
            "datasource": DATASOURCE,
            "expr": expr,
            "legendFormat": legend,
            "refId": chr(ord("A") + i),
        }
        for i, (expr, legend) in enumerate(panel.targets)
    ]


def _panel(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, object]:
    body: dict[str, object] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0}, "overrides": []},
        "targets": _targets(panel),
    }
    if panel.kind == "stat":
        body["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    else:
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return body


def _variables() -> list[dict[str, object]]:
    listeners = "label_values(stunner_listener_connections, name)"
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": DATASOURCE_NAME, "value": DATASOURCE_NAME},
            "hide": 0,
        },
        {
            "name": "listener",
            "label": "Listener",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": listeners,
            "query": {"query": listeners, "refId": "listener"},
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "hide": 0,
        },
    ]


def build() -> dict[str, object]:
    """The dashboard as Grafana's JSON model: a row per group, stats 6 wide, graphs 12 wide."""
    panels: list[dict[str, object]] = []
    y = 0
    for title, row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row:
            width, height = (6, 4) if panel.kind == "stat" else (12, 8)
            if x + width > WIDTH:
                x, y = 0, y + height
            grid = {"h": height, "w": width, "x": x, "y": y}
            panels.append(_panel(panel, len(panels) + 1, grid))
            x += width
        y += height
    return {
        "title": "STUNner",
        "uid": "stunner",
        "description": "STUNner media gateways: listeners, relayed traffic and stunnerd processes.",
        "tags": ["stunner", "webrtc", "turn"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "templating": {"list": _variables()},
        "panels": panels,
    }


def render() -> str:
    """The committed JSON text."""
    return json.dumps(build(), indent=2) + "\n"


def panel_queries(dashboard: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, in dashboard order."""
    queries = []
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def expand(expr: str, listener: str = ".*", rate_interval: str = "1m") -> str:
    """A panel query as Grafana sends it, for running it against Prometheus directly."""
    values = {"listener": listener, "__rate_interval": rate_interval}
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


if __name__ == "__main__":
    sys.stdout.write(render())
