"""`--target external` proven end to end: a deployment started outside the harness
(e2e/external_lab.py: stunnerd from its own config file, two peers, a Prometheus with a static
scrape config), and the harness aimed at it with only the options a user passes. The nested
run must pass, and its report must give a verdict per clause.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from e2e import clauses
from e2e import contract as c
from e2e.external_lab import BackgroundRun

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# What the external scenarios can show about any deployment.
MUST_CONFORM = {
    *(clauses.table_clause(f.name) for f in c.ALL),
    clauses.UDP_CONNECTION,
    clauses.STREAM_FRAMES,
    clauses.CLUSTER_ADMITTED,
    clauses.TX_LEFT,
    clauses.ERROR_403,
    clauses.ADMISSION,
    clauses.RELAY,
}
# What only a local gateway can show (reloads, a lifetime cap, a fresh source address).
NOT_TESTABLE = {clauses.REMOVED_SERIES, clauses.MONOTONIC, clauses.LIFETIME, clauses.GUARD}


async def test_external_target_end_to_end(external_run: BackgroundRun) -> None:
    rc, error = await asyncio.to_thread(external_run.result)
    log = external_run.reportdir / "pytest.log"
    assert not error, f"the external deployment failed: {error}"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    assert rc == 0, f"pytest --target external exited {rc}:\n{tail}"
    report = json.loads((external_run.reportdir / "report.json").read_text())
    assert report["target"] == "external" and report["assertions_failed"] == 0
    verdicts = {row["clause"]: row["verdict"] for row in report["clauses"]}
    assert {k for k in MUST_CONFORM if verdicts.get(k) != "conforms"} == set(), verdicts
    assert {k for k in NOT_TESTABLE if verdicts.get(k) != "not testable here"} == set(), verdicts
    assert "--target" in external_run.argv and "--prometheus-url" in external_run.argv
