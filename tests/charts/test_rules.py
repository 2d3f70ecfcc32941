"""The alert and recording rules: promtool checks them, and its unit tests prove each alert.

The unit tests in charts/rules/stunner-rules.test.yaml must fire each alert on a series built to
trigger it and keep it silent on healthy series. The mutation tests below show that they do:
an alert that never fires, or one that always fires, makes them fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.manifests import CHARTS

RULES_DIR = CHARTS / "rules"
SOURCE = RULES_DIR / "stunner-rules.yaml"
UNIT_TESTS = RULES_DIR / "stunner-rules.test.yaml"
COPIES = [
    CHARTS / chart / "rules" / "stunner-rules.yaml" for chart in ("stunner", "stunner-prometheus")
]


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _rules() -> dict[str, Any]:
    return dict(yaml.safe_load(SOURCE.read_text()))


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rules()["groups"] for rule in group["rules"] if "alert" in rule]


def test_chart_copies_are_identical_to_the_source() -> None:
    for copy in COPIES:
        assert copy.read_text() == SOURCE.read_text(), (
            f"{copy} is stale: run python charts/generate.py"
        )


@pytest.mark.parametrize("path", [SOURCE, *COPIES], ids=lambda p: str(p.relative_to(CHARTS)))
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    done = _run(promtool, "check", "rules", str(path), cwd=path.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 17 rules found" in done.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    done = _run(promtool, "test", "rules", UNIT_TESTS.name, cwd=RULES_DIR)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_have_severity_summary_and_description() -> None:
    alerts = _alerts()
    assert [a["alert"] for a in alerts] == [
        "StunnerGatewayDown",
        "StunnerMetricsAbsent",
        "StunnerAllocationsWithoutTraffic",
        "StunnerListenerConnectionsDropped",
        "StunnerHighOpenFds",
        "StunnerCPUSaturated",
        "StunnerAuthenticationFailures",
        "StunnerPeersRefused",
        "StunnerAllocationQuotaExhausted",
        "StunnerPacketsDropped",
        "StunnerListenerNotReady",
        "StunnerConfigReloadFailed",
    ]
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert set(alert["annotations"]) == {"summary", "description"}
        assert all(text.strip() for text in alert["annotations"].values())


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases = [
        case
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in _alerts():
        mine = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{alert['alert']} never expected to fire"
        assert any(not case["exp_alerts"] for case in mine), (
            f"{alert['alert']} never expected silent"
        )


def _mutated(tmp_path: Path, alertname: str, expr: str) -> Path:
    rules = _rules()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alertname:
                rule["expr"] = expr
    (tmp_path / SOURCE.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


@pytest.mark.parametrize("alertname", [alert["alert"] for alert in _alerts()])
@pytest.mark.parametrize("mutation", ["never fires", "always fires"])
def test_unit_tests_catch_a_broken_alert(
    promtool: str, tmp_path: Path, alertname: str, mutation: str
) -> None:
    # "always fires" keeps the alert's own labels where it can, so only silent cases can catch it.
    original = next(a for a in _alerts() if a["alert"] == alertname)["expr"]
    expr = "vector(1) < 0" if mutation == "never fires" else f"({original}) or on () vector(1)"
    directory = _mutated(tmp_path, alertname, expr)
    done = _run(promtool, "test", "rules", UNIT_TESTS.name, cwd=directory)
    assert done.returncode != 0
    assert f"alertname: {alertname}" in done.stdout + done.stderr
