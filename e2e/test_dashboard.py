"""Every query of the shipped Grafana dashboard runs against the live Prometheus and returns
data; rate panels must have seen traffic. This catches a panel that asks for a metric or a
label that does not exist, which Grafana would only show as an empty graph.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from e2e.checks import Checker, Recorder
from e2e.targets.base import Target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DASHBOARD = Path(__file__).parent.parent / "charts/stunner-prometheus/dashboards/stunner.json"
# Grafana's variables, as a user viewing "All" listeners would have them.
VARIABLES = {"$listener": ".*", "${listener}": ".*", "$__rate_interval": "15s"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the variables filled in) for every panel target.

    Which metrics the panels cover is checked offline by tests/charts/test_dashboard.py.
    """
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for tgt in panel.get("targets", []):
            expr = tgt.get("expr")
            if not expr:
                continue
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unknown variable in {panel['title']}: {expr}"
            out.append((panel["title"], expr))
    return out


async def test_every_panel_returns_data_after_traffic(
    target: Target, recorder: Recorder, run_info: object
) -> None:
    check = Checker(target.scope, "dashboard panels against live Prometheus", recorder)
    prom = target.scope.prom
    end = time.time()
    start = end - 600
    for title, expr in dashboard_queries():
        series = await asyncio.to_thread(prom.query_range, expr, start, end, 2.0)
        values = [v for _, points in series for _, v in points]
        has_data = bool(values)
        saw_traffic = any(v > 0 for v in values)
        needs_traffic = "rate(" in expr
        ok = has_data and (saw_traffic or not needs_traffic)
        check.expect_true(
            f"panel {title!r}",
            expr,
            ok,
            "series with values > 0" if needs_traffic else "at least one series",
            f"{len(series)} series, max {max(values) if values else 'none'}",
        )
    check.assert_all()
