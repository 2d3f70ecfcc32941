"""Assertions on Prometheus query results, each kept as a record for the report.

A check polls until its expectation holds or a deadline passes (scrapes lag the traffic), and
always records the query it ran, the expectation and the last value it got. Nothing raises
until `Checker.assert_all()`, so one run reports every mismatch, not just the first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from e2e import clauses, contract
from e2e.contract import Key
from e2e.netutil import poll
from e2e.prom import PromClient, Sample

SCRAPE_TIMEOUT = 25.0  # Prometheus 2.42 takes ~6 s to its first sample; leave room
SETTLE = 4.0  # after a fresh scrape, how long a value may still be catching up


@dataclass(frozen=True)
class Expect:
    """A closed interval; `exact(v)` when the truth is exact."""

    lo: float
    hi: float
    why: str = ""
    clause: str = ""  # e2e/clauses.py; "" = the table row of the queried family

    @classmethod
    def exact(cls, value: float, why: str = "", clause: str = "") -> Expect:
        return cls(value, value, why, clause)

    @classmethod
    def between(cls, lo: float, hi: float, why: str = "", clause: str = "") -> Expect:
        return cls(lo, hi, why, clause)

    def holds(self, got: float | str | None) -> bool:
        return isinstance(got, float | int) and self.lo <= got <= self.hi

    def __str__(self) -> str:
        if self.lo == self.hi:
            return _fmt(self.lo)
        return f"[{_fmt(self.lo)}, {_fmt(self.hi)}]"


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "absent"
    if isinstance(value, str):
        return value
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"


@dataclass
class Record:
    """One assertion as it ended: what was asked, what was expected, what Prometheus said."""

    scenario: str
    check: str
    query: str
    expected: str
    got: str
    ok: bool
    at: float
    note: str = ""
    negative: bool = False  # a negative control: this check is meant to fail
    clause: str = clauses.HARNESS  # the statement this record checks (e2e/clauses.py)
    value: float | None = None  # the number behind `got`, if it was one
    lo: float | None = None  # the expectation behind `expected`, if numeric
    hi: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # for profiles (label checks)
    verdict: str = ""  # under the run's profile: conforms | documented deviation | fails

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recorder:
    """All records of a run, in order, judged under one conformance profile."""

    records: list[Record] = field(default_factory=list)
    profile: str = "spec"

    def add(self, record: Record) -> None:
        self.records.append(record)


@dataclass(frozen=True)
class Scope:
    """Where one gateway's series live in Prometheus.

    `selector`: label matchers added to every query (e.g. `instance="127.0.0.9:8080"`).
    `freshness`: a vector whose sample timestamps tell when the gateway was last scraped.
    `match_target`: for per-target metadata (TYPE/HELP), or '' to skip that check.
    """

    prom: PromClient
    selector: str
    freshness: str
    match_target: str = ""
    target_labels: frozenset[str] = frozenset({"instance", "job"})
    # A condition true for successful scrapes only (e.g. `up{...} == 1`); "" = `freshness`
    # has samples of successful scrapes only.
    # A failed scrape (a busy gateway, a timeout) moves `up`'s timestamp but no series.
    healthy: str = ""

    def sel(self, *extra: str) -> str:
        parts = [p for p in (self.selector, *extra) if p]
        return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True)
class Snapshot:
    """The moment a scenario starts: counter deltas are taken against this time."""

    at: float


class Checker:
    """Runs checks for one scenario against one scope and records every outcome."""

    def __init__(
        self, scope: Scope, scenario: str, recorder: Recorder, *, negative: bool = False
    ) -> None:
        """`negative`: a control run whose checks are meant to fail (marked in the report)."""
        self.negative = negative
        self.scope = scope
        self.scenario = scenario
        self.recorder = recorder
        self.mine: list[Record] = []

    # -- time -------------------------------------------------------------------------------

    def fresh(
        self,
        after: float | None = None,
        timeout: float = SCRAPE_TIMEOUT,
        *,
        any_scrape: bool = False,
    ) -> float:
        """Wait for a successful scrape that started after `after` (default: now); return an
        eval time. `any_scrape`: a failed one will do (the gateway's metrics are off)."""
        after = time.time() if after is None else after
        # timestamp() of a selector is its sample's time; `and` keeps successful scrapes only
        # (timestamp() of a comparison would be the evaluation time).
        expr = f"min(timestamp({self.scope.freshness}))"
        if self.scope.healthy and not any_scrape:
            expr = f"min(timestamp({self.scope.freshness}) and {self.scope.healthy})"

        def oldest() -> float:
            rows = self.scope.prom.query(expr)
            return rows[0][1] if rows else 0.0

        poll(oldest, lambda t: t > after, timeout=timeout, what=f"a scrape after {after:.3f}")
        return time.time()

    def snapshot(self) -> Snapshot:
        """Call when the gateway is quiet: the baseline for counter deltas."""
        return Snapshot(self.fresh())

    # -- recording --------------------------------------------------------------------------

    def _record(
        self,
        check: str,
        query: str,
        expect: Expect | str,
        got: str,
        ok: bool,
        at: float,
        *,
        clause: str = clauses.HARNESS,
        value: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Record:
        note = expect.why if isinstance(expect, Expect) else ""
        rec = Record(self.scenario, check, query, str(expect), got, ok, at, note, self.negative)
        rec.clause, rec.value, rec.detail = clause, value, detail or {}
        if isinstance(expect, Expect):
            rec.lo, rec.hi = expect.lo, expect.hi
        rec.verdict = clauses.judge(rec, self.recorder.profile)
        self.recorder.add(rec)
        self.mine.append(rec)
        return rec

    def failures(self) -> list[Record]:
        """Records that fail under the run's profile (a documented deviation does not)."""
        return [r for r in self.mine if r.verdict == clauses.FAILS]

    def assert_all(self) -> None:
        """Raise one AssertionError that lists every failed check of this scenario."""
        bad = self.failures()
        if bad:
            lines = [f"{r.check}: expected {r.expected}, got {r.got}  [{r.query}]" for r in bad]
            raise AssertionError(
                f"{self.scenario}: {len(bad)} of {len(self.mine)} checks failed:\n"
                + "\n".join(lines)
            )

    # -- value checks -----------------------------------------------------------------------

    def _value(self, query: str, at: float) -> float | str | None:
        """The one value of `query`; None if absent; a description if the answer is not one
        number (recorded as a deviation, never raised: the other checks still run)."""
        try:
            rows = self.scope.prom.query(query, at=at)
        except Exception as exc:  # e.g. an API error on a query the target cannot answer
            return f"query error: {exc}"[:200]
        if not rows:
            return None
        if len(rows) > 1:
            return f"{len(rows)} series, expected one"
        return rows[0][1]

    def expect_values(
        self,
        queries: Mapping[str, tuple[str, Expect]],
        *,
        after: float | None = None,
        settle: float = SETTLE,
        at: float | None = None,
        any_scrape: bool = False,
    ) -> dict[str, float | None]:
        """Check named scalar queries; poll (after a fresh scrape) until all hold or `settle`.

        With `at`, evaluate once at that fixed time (history does not change by waiting).
        """
        got: dict[str, float | str | None] = {}

        def evaluate(when: float) -> bool:
            for check, (query, _) in queries.items():
                got[check] = self._value(query, when)
            return all(queries[c][1].holds(v) for c, v in got.items())

        if at is not None:
            evaluate(at)
            when = at
        else:
            when = self.fresh(after, any_scrape=any_scrape)
            deadline = time.monotonic() + settle
            while not evaluate(when) and time.monotonic() < deadline:
                time.sleep(0.25)
                when = time.time()
        for check, (query, expect) in queries.items():
            value = got.get(check)
            self._record(
                check,
                query,
                expect,
                _fmt(value),
                expect.holds(value),
                when,
                clause=expect.clause or _family_clause(query),
                value=value if isinstance(value, float | int) else None,
            )
        return {k: (v if not isinstance(v, str) else None) for k, v in got.items()}

    def expect_deltas(
        self,
        since: Snapshot,
        expected: Mapping[Key, Expect],
        *,
        after: float | None = None,
        settle: float = SETTLE,
    ) -> dict[str, float | None]:
        """Counter increase between `since` and now, per series, summed over instances."""
        queries = {
            f"increase {key}": (self._delta_query(key, since.at), exp)
            for key, exp in sorted(expected.items())
        }
        return self.expect_values(queries, after=after, settle=settle)

    def _delta_query(self, key: Key, since: float) -> str:
        # A series missing at either end reads as 0: whether series exist from the start is
        # the series-at-zero clause's business (expect_series), not the counting's.
        series = f"{key.family}{self.scope.sel(key.matchers())}"
        return f"(sum({series}) or vector(0)) - (sum({series} @ {since:.3f}) or vector(0))"

    def expect_absolute(
        self,
        expected: Mapping[Key, Expect],
        *,
        after: float | None = None,
        settle: float = SETTLE,
    ) -> dict[str, float | None]:
        """Plain instant values (gauges, or counters of a listener created in this test)."""
        queries = {
            f"value {key}": (f"sum({key.family}{self.scope.sel(key.matchers())})", exp)
            for key, exp in sorted(expected.items())
        }
        return self.expect_values(queries, after=after, settle=settle)

    def expect_max(
        self, start: float, end: float, expected: Mapping[Key, Expect], label: str = ""
    ) -> None:
        """`max_over_time` of each gauge over [start, end]: the peak a dashboard would show."""
        # The window is exactly (start, end]: rounding it up would reach back into the
        # previous wave. Subquery steps of 250 ms see every 1 s sample inside it.
        span = _ms(end - start)
        queries = {}
        for key, exp in sorted(expected.items()):
            inner = f"sum({key.family}{self.scope.sel(key.matchers())})"
            query = f"max_over_time({inner}[{span}:250ms] @ {end:.3f})"
            queries[f"max_over_time {key} {label}".rstrip()] = (query, exp)
        self.expect_values(queries, at=end)

    def expect_no_resets(self, start: float, end: float, families: Iterable[str]) -> None:
        """Counters never go down: `resets()` over the window is 0 for every series."""
        span = _ms(end - start)
        queries = {
            f"resets {fam}": (
                f"max(resets({fam}{self.scope.sel()}[{span}] @ {end:.3f}))",
                Expect.exact(0, "counters never decrease, even across a reload", clauses.MONOTONIC),
            )
            for fam in families
        }
        self.expect_values(queries, at=end)

    def expect_true(
        self,
        check: str,
        what: str,
        ok: bool,
        expected: object,
        got: object,
        clause: str = clauses.HARNESS,
    ) -> None:
        """A client-side fact (an answer code, echo backend counts) recorded like a query."""
        self._record(check, what, str(expected), str(got), ok, time.time(), clause=clause)

    # -- series shape -----------------------------------------------------------------------

    def expect_series(
        self, names: Iterable[str], *, exact_names: bool = True, after: float | None = None
    ) -> None:
        """The nine families exist with exactly the contract's labels, and nothing else does.

        `exact_names`: the gateway's listeners are exactly `names` (false when aiming at a
        deployment whose other listeners we do not know).
        """
        want_names = set(names)
        when = self.fresh(after)
        query = self.scope.sel('__name__=~"stunner_.+"')
        rows = self.scope.prom.query(query, at=when)
        got: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        for labels, _ in rows:
            own = {
                k: v
                for k, v in labels.items()
                if k != "__name__" and k not in self.scope.target_labels
            }
            got.setdefault(labels.get("__name__", ""), set()).add(tuple(sorted(own.items())))
        stray = sorted(set(got) - contract.DOCUMENTED)
        self._record(
            "no stray stunner_* families",
            query,
            "none",
            ", ".join(stray) or "none",
            not stray,
            when,
            clause=clauses.LABELS,
        )
        for fam in contract.ALL:
            expected = {
                tuple(sorted(_labels(k).items()))
                for n in want_names
                for k in contract.keys_for(fam, n)
            }
            have = got.get(fam.name, set())
            if not exact_names:
                # Other listeners may exist; still, every series must carry exactly our labels.
                keys = set(_labels(contract.keys_for(fam, "-")[0]))
                have = {
                    s for s in have if dict(s).get("name") in want_names or set(dict(s)) != keys
                }
            missing, extra = expected - have, have - expected
            detail = {
                "missing": len(missing),
                "extra": len(extra),
                "family_absent": fam.name not in got,
                "unlabelled": bool(have) and all("name" not in dict(s) for s in have),
            }
            cluster = fam.name.startswith("stunner_cluster_")
            clause = clauses.NAME_IS_LISTENER if cluster else clauses.LABELS
            if detail["family_absent"] or detail["unlabelled"]:
                clause = clauses.table_clause(fam.name)
            elif cluster and any(dict(s).get("name") not in want_names for s in extra):
                clause = clauses.NAME_IS_LISTENER
            elif missing and not extra:
                clause = clauses.SERIES_AT_ZERO
            self._record(
                f"labels {fam.name}",
                f"{fam.name}{self.scope.sel()}",
                _fmt_sets(expected),
                _fmt_sets(have),
                have == expected,
                when,
                clause=clause,
                detail=detail,
            )

    def expect_metadata(self) -> None:
        """TYPE and HELP of each family as Prometheus scraped them from the gateway."""
        if not self.scope.match_target:
            return
        rows = self.scope.prom.target_metadata(self.scope.match_target)
        meta = {r["metric"]: r for r in rows}
        when = time.time()
        for fam in contract.ALL:
            base = fam.name.removesuffix("_total") if fam.type == "counter" else fam.name
            row = meta.get(fam.name) or meta.get(base) or {}
            got = f"{row.get('type', 'absent')}: {row.get('help', '')}"
            want = f"{fam.type}: {fam.help}"
            self._record(
                f"TYPE/HELP {fam.name}",
                f"/api/v1/targets/metadata?match_target={self.scope.match_target}",
                want,
                got,
                got == want,
                when,
                clause=clauses.HELP if row else clauses.table_clause(fam.name),
                detail={"family_absent": not row},
            )


def _family_clause(query: str) -> str:
    """The table row of the first contract family a query names."""
    for fam in sorted(contract.ALL, key=lambda f: -len(f.name)):
        if fam.name in query:
            return clauses.table_clause(fam.name)
    return clauses.HARNESS


def _ms(seconds: float) -> str:
    """A PromQL duration of at least 1 ms."""
    return f"{max(1, int(seconds * 1000))}ms"


def _labels(key: Key) -> dict[str, str]:
    out = {"name": key.name}
    if key.direction:
        out["direction"] = key.direction
    return out


def _fmt_sets(sets: set[tuple[tuple[str, str], ...]]) -> str:
    return "; ".join(",".join(f"{k}={v}" for k, v in s) for s in sorted(sets)) or "none"


def sample_values(rows: list[Sample], label: str) -> dict[str, float]:
    """{label value: sample value} for a query that returns one series per `label`."""
    return {labels.get(label, ""): value for labels, value in rows}


Truth = Callable[[], Mapping[Key, Expect]]
