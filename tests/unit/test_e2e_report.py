"""The e2e report names the target it ran against, and every skipped scenario with its reason."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.checks import Recorder
from e2e.report import RunInfo, write_tables


def test_report_names_the_target_and_why_scenarios_skipped(tmp_path: Path) -> None:
    info = RunInfo(target="kind", started=100.0, finished=101.5)
    info.outcomes = {
        "e2e/test_harness.py::test_static": "passed",
        "e2e/test_traffic.py::test_udp": "skipped: kind: kind not found on PATH",
        "e2e/test_reload.py::test_add": "skipped: needs --target local",
        "e2e/test_waves.py::test_waves": "error in setup",
    }
    write_tables(tmp_path, Recorder(), info)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[0] == "# stunner e2e report (kind)"
    assert "- target: kind; tests: 1 passed, 1 failed, 2 skipped" in lines
    start = lines.index("## Skipped, and why")
    assert lines[start + 2 : start + 4] == [
        "- `e2e/test_traffic.py::test_udp`: kind: kind not found on PATH",
        "- `e2e/test_reload.py::test_add`: needs --target local",
    ]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"] == "kind"
    assert report["skipped"] == {
        "e2e/test_traffic.py::test_udp": "kind: kind not found on PATH",
        "e2e/test_reload.py::test_add": "needs --target local",
    }


def test_nothing_skipped_says_so(tmp_path: Path) -> None:
    info = RunInfo(target="local", started=0.0, finished=1.0)
    info.outcomes = {"e2e/test_harness.py::test_static": "passed"}
    write_tables(tmp_path, Recorder(), info)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "- target: local; tests: 1 passed, 0 failed, 0 skipped" in lines
    assert lines[lines.index("## Skipped, and why") + 2] == "- nothing"
