"""The saturation search in rounds: where a later round starts, the turn order, the pooled
knee, the verdicts (met / NOT met / split) and the tables, from made-up searches (no server
runs here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from bench import pinning, report, saturation
from bench.paced import Step, clients_for
from bench.saturation import FULL, QUICK, Start

# the round plan


def test_grid_index_is_the_highest_grid_point_at_or_below() -> None:
    # FULL's grid: 16,000 x 1.5^k = 16,000, 24,000, 36,000, 54,000, 81,000, ...
    assert [saturation.grid_index(FULL, r) for r in (15_000, 16_000, 23_999, 24_000)] == [
        0,
        0,
        0,
        1,
    ]
    assert saturation.grid_index(FULL, 54_000) == 3  # 1.5**3 in floating point is exact enough
    assert saturation.grid_index(FULL, 66_136.2) == 3  # a bisection between 54,000 and 81,000
    assert saturation.grid_index(QUICK, 48_000) == 1


def knee_entry(intended: float | None) -> dict[str, Any]:
    knee = None if intended is None else {"intended": intended, "offered": intended}
    return {"knee": knee, "first_lossy": None, "limit": "", "steps": []}


def test_a_later_round_starts_two_grid_points_at_or_below_the_first_knee() -> None:
    # 54,000 and 36,000 are the two grid points at or below a knee of 66,136; the top of the
    # grid stays 16,000 x 1.5^6 (7 steps from the bottom, 5 from 36,000).
    assert saturation.later_start(FULL, knee_entry(66_136.2)) == Start(36_000, 5, 16_000)
    assert saturation.later_start(FULL, knee_entry(54_000)) == Start(36_000, 5, 16_000)
    assert saturation.later_start(FULL, knee_entry(200_000)) == Start(121_500, 2, 16_000)


def test_a_later_round_starts_at_the_bottom_when_the_first_knee_is_low_or_missing() -> None:
    assert saturation.later_start(FULL, knee_entry(30_000)) == Start(16_000, 7, None)
    assert saturation.later_start(FULL, knee_entry(None)) == Start(16_000, 7, None)
    assert saturation.later_start(FULL, None) == Start(16_000, 7, None)  # the first round
    assert saturation.later_start(QUICK, knee_entry(48_000)) == Start(24_000, 2, None)


def test_servers_take_turns_round_by_round() -> None:
    names = ["stunnerd", "coturn", "pion"]
    assert saturation.turn_order(names, 0) == names
    assert saturation.turn_order(names, 1) == ["pion", "coturn", "stunnerd"]
    assert saturation.turn_order(names, 2) == names


def lossy_above(knee: float) -> Any:
    """A server that loses 5% above ``knee``; the asked rates are recorded."""
    asked: list[float] = []

    def measure(rate: float) -> Step:
        asked.append(rate)
        step = Step("fake", rate, clients_for(rate))
        step.offered, step.loss_pct = rate, 5.0 if rate > knee else 0.0
        return step

    measure.asked = asked  # type: ignore[attr-defined]
    return measure


def test_a_later_round_measures_overload_at_the_same_absolute_rates() -> None:
    first = saturation.find_knee(lossy_above(50_000), 16_000, 1.5, 7)
    later_measure = lossy_above(50_000)
    later = saturation.find_knee(later_measure, 36_000, 1.5, 5, floor=16_000)
    assert later_measure.asked == [36_000, 54_000, 81_000, pytest.approx(44_090.8, 0.1)]
    lossy = [s.intended for s in first.steps if s.loss_pct >= 1]
    assert lossy == [s.intended for s in later.steps if s.loss_pct >= 1] == [54_000, 81_000]
    assert later.knee is not None and later.knee.intended == pytest.approx(44_090.8, 0.1)


def test_a_later_round_whose_first_step_loses_steps_down_the_grid() -> None:
    measure = lossy_above(30_000)
    search = saturation.find_knee(measure, 36_000, 1.5, 5, floor=16_000)
    # 36k and 54k lossy (one grid step past the first lossy), then down: 24k clean, then the
    # bisection sqrt(24k x 36k) = 29,394 is clean too.
    assert [round(r) for r in measure.asked] == [36_000, 54_000, 24_000, 29_394]
    assert search.knee is not None and round(search.knee.intended) == 29_394
    assert search.first_lossy is not None and search.first_lossy.intended == 36_000
    assert search.limit == ""


def test_stepping_down_stops_at_the_floor() -> None:
    measure = lossy_above(1_000)
    search = saturation.find_knee(measure, 36_000, 1.5, 5, floor=16_000)
    assert measure.asked == [36_000, 54_000, 24_000, 16_000]
    assert search.knee is None
    assert search.first_lossy is not None and search.first_lossy.intended == 16_000


def test_without_a_floor_the_search_does_not_step_down() -> None:
    measure = lossy_above(1_000)
    saturation.find_knee(measure, 36_000, 1.5, 5)
    assert measure.asked == [36_000, 54_000]


# pooling and verdicts


def step(rate: float, loss: float, offered: float | None = None, shared: bool = False) -> Any:
    s = Step("x", rate, clients_for(rate))
    s.offered, s.loss_pct = rate if offered is None else offered, loss
    s.server_cpu, s.server_core_busy = (0.5, 0.9) if shared else (0.5, 0.5)
    s.generator_cpu, s.load_core_busy = 0.6, 0.7
    return s.to_json()


def search(steps: list[dict[str, Any]], limit: str = "") -> dict[str, Any]:
    """A search in the JSON's shape: the knee is the best clean step, first_lossy the lowest
    lossy step above it."""
    clean = [s for s in steps if s["loss_pct"] < 1]
    knee = max(clean, key=lambda s: s["offered"]) if clean else None
    above = [
        s for s in steps if s["loss_pct"] >= 1 and (not knee or s["offered"] > knee["offered"])
    ]
    lossy = min(above, key=lambda s: s["intended"]) if above else None
    return {"steps": steps, "knee": knee, "first_lossy": lossy, "limit": limit}


def two_rounds(stunnerd2: float = 65_000, shared: bool = False) -> dict[str, Any]:
    """The figures of note17b's two runs as two rounds (stunnerd's second knee made up)."""
    rounds = [
        {
            "servers": {
                "stunnerd": search(
                    [
                        step(36_000, 0.0),
                        step(54_000, 0.0, 53_998),
                        step(81_000, 21.6),
                        step(121_500, 40.0),
                        step(66_136, 3.0),
                    ]
                ),
                "coturn": search(
                    [
                        step(36_000, 0.0),
                        step(54_000, 0.0),
                        step(81_000, 6.6),
                        step(121_500, 45.0),
                        step(66_136, 0.2, 64_887),
                    ]
                ),
            },
            "seconds": 150.0,
        },
        {
            "servers": {
                "coturn": search(
                    [
                        step(36_000, 0.0),
                        step(54_000, 0.0),
                        step(81_000, 13.4),
                        step(121_500, 45.4),
                        step(66_136, 0.2, 63_496),
                    ]
                ),
                "stunnerd": search(
                    [
                        step(36_000, 0.0),
                        step(54_000, 0.0),
                        step(81_000, 2.0, shared=shared),
                        step(121_500, 36.1),
                        step(66_136, 0.0, stunnerd2),
                    ]
                ),
            },
            "seconds": 120.0,
        },
    ]
    sat: dict[str, Any] = {"server_cores": [0], "load_cores": [1], "rounds": rounds}
    sat["servers"] = saturation.pooled(rounds)
    return {"saturation": sat}


def test_pooled_knee_is_the_lowest_round_knee() -> None:
    pool = two_rounds()["saturation"]["servers"]
    assert pool["stunnerd"]["round"] == 1 and pool["stunnerd"]["knee"]["offered"] == 53_998
    assert pool["stunnerd"]["round_knees"] == [53_998, 65_000]
    assert pool["coturn"]["round"] == 2 and pool["coturn"]["knee"]["offered"] == 63_496
    assert pool["coturn"]["round_knees"] == [64_887, 63_496]
    assert saturation.knee_of(two_rounds(), "stunnerd") == 53_998  # what callsetup reads


def test_pooling_takes_the_earliest_of_equal_knees_and_skips_failed_rounds() -> None:
    same = search([step(16_000, 0.0), step(24_000, 5.0)])
    failed = search([step(16_000, 0.0, 15_000)], limit="error: no traffic reached the peer")
    failed["knee"] = None
    rounds = [{"servers": {"coturn": same}}, {"servers": {"coturn": same}}]
    assert saturation.pooled(rounds)["coturn"]["round"] == 1
    rounds = [{"servers": {"coturn": failed}}, {"servers": {"coturn": same}}]
    assert saturation.pooled(rounds)["coturn"]["round"] == 2
    assert saturation.pooled(rounds)["coturn"]["round_knees"] == [None, 16_000]
    stopped = search([step(16_000, 0.0, 15_000)], limit="error: boom")  # a knee, then an error
    rounds = [{"servers": {"coturn": stopped}}, {"servers": {"coturn": same}}]
    assert saturation.pooled(rounds)["coturn"]["round"] == 2
    rounds = [{"servers": {"coturn": stopped}}, {"servers": {"coturn": stopped}}]
    assert saturation.pooled(rounds)["coturn"]["knee"]["offered"] == 15_000  # nothing better


def test_a_round_lossy_from_its_lowest_step_leaves_no_pooled_knee() -> None:
    lossy = search([step(16_000, 4.0), step(24_000, 9.0)])
    rounds = [{"servers": {"pion": search([step(16_000, 0.0)])}}, {"servers": {"pion": lossy}}]
    pool = saturation.pooled(rounds)
    assert pool["pion"]["round"] == 2 and pool["pion"]["knee"] is None
    assert saturation.pooled([{"servers": {}}]) == {}


def test_agreed_is_split_when_rounds_disagree() -> None:
    assert saturation.agreed([True, True]) is True
    assert saturation.agreed([False, False]) is False
    assert saturation.agreed([True, False]) == "split"
    assert saturation.agreed([None, False, None]) is False  # undecided rounds do not count
    assert saturation.agreed([None]) is None
    assert saturation.agreed([]) is None


def verdicts(data: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {t["name"]: (t["value"], t["met"]) for t in saturation.targets(data)}


KNEE = "saturation knee on one core, stunnerd / coturn"
OVERLOAD = "loss under overload, stunnerd vs coturn (same asked rates)"


def test_verdicts_split_when_the_rounds_disagree() -> None:
    found = verdicts(two_rounds())
    # pooled 53,998 / 63,496; per round 53,998 / 64,887 and 65,000 / 63,496
    assert found[KNEE] == ("0.85x pooled (lowest knees); per round 0.83x, 1.02x", "split")
    assert found[OVERLOAD] == (
        "round 1: 66,000/s: 3.0% vs 0.2%; 81,000/s: 21.6% vs 6.6%; 122,000/s: 40.0% vs 45.0%; "
        "round 2: 81,000/s: 2.0% vs 13.4%; 122,000/s: 36.1% vs 45.4%",
        "split",
    )


def test_verdicts_are_not_met_when_every_round_misses() -> None:
    # note17b's second run: 63,266 vs 63,496 prints as 1.00x but is below 1.0
    found = verdicts(two_rounds(stunnerd2=63_266))
    assert found[KNEE] == ("0.85x pooled (lowest knees); per round 0.83x, 1.00x", False)


def test_verdicts_are_met_when_every_round_meets() -> None:
    data = two_rounds()
    stunnerd = data["saturation"]["rounds"][0]["servers"]["stunnerd"]
    stunnerd["knee"] = dict(stunnerd["knee"], offered=70_000)
    for found in data["saturation"]["rounds"]:
        for s in found["servers"]["stunnerd"]["steps"]:
            s["loss_pct"] = min(s["loss_pct"], 0.5)
    data["saturation"]["servers"] = saturation.pooled(data["saturation"]["rounds"])
    found = verdicts(data)
    assert found[KNEE] == ("1.02x pooled (lowest knees); per round 1.08x, 1.02x", True)
    assert found[OVERLOAD][1] is True


def test_a_ratio_from_a_shared_core_says_so() -> None:
    found = verdicts(two_rounds(shared=True))
    assert found[KNEE][0] == ("0.85x pooled (lowest knees); per round 0.83x, 1.02x (core shared)")


def test_the_targets_table_says_split() -> None:
    rows = report.targets_table(two_rounds()).rows
    knee = next(row for row in rows if row[0] == KNEE)
    assert knee[3] == "split (rounds disagree)"


# tables


def test_knee_table_has_every_round_and_the_pooled_knee() -> None:
    table = saturation.knee_table(two_rounds(shared=True))
    assert [[*row[:3], *row[6:]] for row in table.rows] == [
        ["stunnerd", "1", "53,998", "0.83x", "5"],
        ["stunnerd", "2", "65,000 (core shared)", "1.02x", "5"],
        ["stunnerd", "lowest (round 1)", "53,998", "0.85x", ""],
        ["coturn", "1", "64,887", "", "5"],
        ["coturn", "2", "63,496", "", "5"],
        ["coturn", "lowest (round 2)", "63,496", "", ""],
    ]
    assert table.rows[0][3:6] == ["107,996", "50%", "60% (70%)"]
    assert "2 rounds, each a fresh server" in table.note


def test_overload_table_has_a_row_per_round_and_asked_rate() -> None:
    table = saturation.overload_table(two_rounds(shared=True))
    assert [row[:4] for row in table.rows] == [
        ["1", "36,000", "0.00% (36,000)", "0.00% (36,000)"],
        ["1", "54,000", "0.00% (53,998)", "0.00% (54,000)"],
        ["1", "66,000", "3.00% (66,136)", "0.20% (64,887)"],
        ["1", "81,000", "21.60% (81,000)", "6.60% (81,000)"],
        ["1", "122,000", "40.00% (121,500)", "45.00% (121,500)"],
        ["2", "36,000", "0.00% (36,000)", "0.00% (36,000)"],
        ["2", "54,000", "0.00% (54,000)", "0.00% (54,000)"],
        ["2", "66,000", "0.00% (65,000)", "0.20% (63,496)"],
        ["2", "81,000", "2.00% (81,000, core shared)", "13.40% (81,000)"],
        ["2", "122,000", "36.10% (121,500)", "45.40% (121,500)"],
    ]
    assert table.headers[:4] == ["round", "asked msgs/s", "stunnerd loss (offered)",
                                 "coturn loss (offered)"]  # fmt: skip
    assert "A later round starts" in table.note


def test_old_json_without_rounds_is_one_round() -> None:
    data = two_rounds()
    old = {"saturation": {"servers": data["saturation"]["rounds"][0]["servers"]}}
    assert saturation.rounds_of(old) == [{"servers": old["saturation"]["servers"]}]
    assert [row[:3] for row in saturation.knee_table(old).rows] == [
        ["stunnerd", "1", "53,998"],
        ["coturn", "1", "64,887"],
    ]
    assert verdicts(old)[KNEE] == ("0.83x", False)
    assert verdicts(old)[OVERLOAD][1] is False
    assert "A later round" not in saturation.overload_table(old).note
    assert saturation.rounds_of({}) == []


def test_workers_reuse_the_pooled_knee_and_say_so() -> None:
    one = two_rounds()["saturation"]["servers"]["stunnerd"]
    data = {"workers": {"runs": {"1": {**one, "server_cores": [0], "reused": True}}}}
    two = search([step(54_000, 0.0, shared=True), step(70_000, 5.0, shared=True)])
    data["workers"]["runs"]["2"] = {**two, "server_cores": [0, 1]}
    table = saturation.workers_table(data)
    assert table.rows[0][2] == "53,998"
    assert table.rows[1][2] == "54,000"  # on both cores, with the load: not "core shared"
    assert "the lowest of its rounds (53,998, 65,000 msgs/s)" in table.note
    data["workers"]["runs"]["1"]["knee"] = step(54_000, 0.0, shared=True)
    assert saturation.workers_table(data).rows[0][2] == "54,000 (core shared)"


# the section's rounds, with the searches made up


class FakeBench:
    def __init__(self, rounds: int | None) -> None:
        self.data: dict[str, Any] = {"mode": "full", "notes": []}
        self.saturation_rounds = rounds

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def _server(self, name: str) -> Any:
        @contextlib.contextmanager
        def factory() -> Iterator[Any]:
            yield None if name == "pion" else name  # pion not built: skipped, as in a run

        return factory

    def __getattr__(self, name: str) -> Any:
        if name in report.SERVERS:
            return self._server(name)
        raise AttributeError(name)


def test_run_saturation_takes_turns_and_starts_later_rounds_higher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    knees = {"stunnerd": 50_000, "coturn": 60_000}
    calls: list[tuple[str, float, int, float | None]] = []

    def fake_search(
        bench: Any, echo: Any, server: str, plan: Any, cores: Any, start: float,
        max_steps: int, floor: float | None,
    ) -> saturation.Search:  # fmt: skip
        calls.append((server, start, max_steps, floor))
        return saturation.find_knee(lossy_above(knees[server]), start, 1.5, max_steps, floor=floor)

    @contextlib.contextmanager
    def no_pinning(echo: Any, cores: Any) -> Iterator[None]:
        yield

    monkeypatch.setattr(saturation, "search_server", fake_search)
    monkeypatch.setattr(saturation, "pinned", no_pinning)
    monkeypatch.setattr(pinning, "cores", lambda: [0, 1])
    monkeypatch.setattr(saturation, "say", lambda text: None)
    bench = FakeBench(rounds=2)
    saturation.run_saturation(bench, echo=None)  # type: ignore[arg-type]
    # stunnerd's knee 44,091 (bisection) is above 36,000: round 2 from 24,000; coturn's
    # 54,000 is a grid point: round 2 from 36,000, up to the same top.
    assert calls == [
        ("stunnerd", 16_000, 7, None),
        ("coturn", 16_000, 7, None),
        ("coturn", 36_000, 5, 16_000),
        ("stunnerd", 24_000, 6, 16_000),
    ]
    sat = bench.data["saturation"]
    assert [list(r["servers"]) for r in sat["rounds"]] == [
        ["stunnerd", "coturn"],
        ["coturn", "stunnerd"],
    ]
    assert [r["servers"]["coturn"]["start"] for r in sat["rounds"]] == [16_000, 36_000]
    assert sat["servers"]["coturn"]["round_knees"] == [54_000, 54_000]
    assert saturation.knee_table(bench.data).rows[2][1] == "lowest (round 1)"


def test_one_round_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert saturation.rounds_wanted(FakeBench(None), FULL) == 2
    assert saturation.rounds_wanted(FakeBench(None), QUICK) == 1
    assert saturation.rounds_wanted(FakeBench(3), QUICK) == 3
