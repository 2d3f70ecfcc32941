"""The harness proves itself before any stunnerd exists: a static exposition target, scraped by
the real Prometheus through file_sd with the chart's path and interval, must pass the checks
when the expectation is right and fail them when it is wrong.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from e2e import contract
from e2e.checks import Checker, Expect, Recorder, Scope
from e2e.contract import Key
from e2e.targets.local import ROLES, SELFTEST_LISTENER, LocalLab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

NAME = SELFTEST_LISTENER


def _scope(lab: LocalLab) -> Scope:
    return lab.scope("selftest")


def test_prometheus_scrapes_file_sd_targets_as_the_chart_says(
    lab: LocalLab, recorder: Recorder
) -> None:
    lab.wait_up("selftest")
    check = Checker(_scope(lab), "harness: scrape config", recorder)
    targets = lab.prometheus.client.active_targets()
    assert {t["labels"]["gateway"] for t in targets} == {*ROLES, "selftest"}
    for t in targets:
        url = urlsplit(t["scrapeUrl"])
        got = f"{url.path} every {t.get('scrapeInterval')} job={t['labels']['job']}"
        want = f"{lab.spec.path} every {lab.spec.interval} job={lab.spec.job}"
        check.expect_true(
            f"scrape {t['labels']['gateway']}", "/api/v1/targets", got == want, want, got
        )
    check.expect_series([NAME])
    check.expect_metadata()
    check.assert_all()


def test_checks_pass_on_truth_and_fail_on_a_lie(lab: LocalLab, recorder: Recorder) -> None:
    lab.wait_up("selftest")
    static = lab.static
    good = Checker(_scope(lab), "harness: checks on a static target", recorder)
    since = good.snapshot()
    static.set(contract.LISTENER_PACKETS.name, 7, "rx")
    static.set(contract.CLUSTER_BYTES.name, 1234, "tx")
    static.set(contract.ALLOCATIONS_ACTIVE.name, 5)
    peak_start = since.at
    good.fresh()
    static.set(contract.ALLOCATIONS_ACTIVE.name, 0)
    truth = {
        Key(contract.LISTENER_PACKETS.name, NAME, "rx"): Expect.exact(7),
        Key(contract.LISTENER_PACKETS.name, NAME, "tx"): Expect.exact(0),
        Key(contract.CLUSTER_BYTES.name, NAME, "tx"): Expect.between(1230, 1240),
    }
    good.expect_deltas(since, truth)
    gauge = Key(contract.ALLOCATIONS_ACTIVE.name, NAME)
    good.expect_absolute({gauge: Expect.exact(0)})
    good.expect_max(peak_start, good.fresh(), {gauge: Expect.exact(5)})
    good.expect_no_resets(peak_start, good.fresh(), [f.name for f in contract.COUNTERS])
    good.assert_all()

    bad = Checker(_scope(lab), "harness: a wrong expectation must fail", recorder, negative=True)
    wrong = {Key(contract.LISTENER_PACKETS.name, NAME, "rx"): Expect.exact(8)}
    bad.expect_deltas(since, wrong, settle=1.0)  # the value is known: 7
    with pytest.raises(AssertionError, match="stunner_listener_packets_total"):
        bad.assert_all()
    assert [r.got for r in bad.failures()] == ["7"]
