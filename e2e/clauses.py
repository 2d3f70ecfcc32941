"""What each assertion checks, and how a conformance profile judges a deviation.

Every record of a run names one clause: a row of the spec's metric table (MONITORING.md,
"Connection statistics"), a semantic of DESIGN.md 1.1-1.3, or an RFC 8656 requirement. At
the end of a run the report has one row per clause: conforms, deviates (documented by the
profile, or not), or not testable here, with the measured difference.

A profile names behaviours of released upstream STUNner (DESIGN.md 1.3). Under a profile a
record that fails the strict expectation but shows exactly the documented behaviour is a
documented deviation and does not fail the run; any other failure still does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from e2e import contract


class Judged(Protocol):
    """The fields of a check record a verdict needs (checks.Record has them)."""

    clause: str
    ok: bool
    expected: str
    got: str
    value: float | None
    lo: float | None
    hi: float | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Clause:
    id: str
    source: str
    statement: str


def _table(fam: contract.Family) -> Clause:
    return Clause(
        f"table:{fam.name}",
        "MONITORING.md metric table (DESIGN.md 1.2)",
        f"{fam.name} ({fam.type}; labels {'direction, ' if fam.directional else ''}name) "
        "exists and counts what its row says",
    )


SERIES_AT_ZERO = "design:series-at-zero"
REMOVED_SERIES = "design:removed-series-disappear"
MONOTONIC = "design:counters-never-decrease"
UDP_CONNECTION = "design:udp-connection-is-a-client"
STREAM_FRAMES = "design:stream-packets-per-frame"
CLUSTER_ADMITTED = "design:cluster-rx-admitted-peers-only"
TX_LEFT = "design:tx-is-a-frame-that-left"
NAME_IS_LISTENER = "design:name-is-the-listener"
LABELS = "design:exact-labels"
HELP = "design:help-strings"
ADMISSION = "design:peer-admission"
ERROR_403 = "rfc8656:403-for-refused-peer"
RELAY = "rfc8656:relay"
LIFETIME = "rfc8656:allocation-lifetime"
GUARD = "stunner:amplification-guard"
HARNESS = "harness:self-check"

CLAUSES: dict[str, Clause] = {
    c.id: c
    for c in (
        *(_table(f) for f in contract.ALL),
        Clause(
            SERIES_AT_ZERO,
            "DESIGN.md 1.2",
            "a listener's series appear at 0 when it is created, not on the first event",
        ),
        Clause(REMOVED_SERIES, "DESIGN.md 1.2", "a removed listener's series disappear"),
        Clause(
            MONOTONIC,
            "DESIGN.md 1.2",
            "counters never go down, even across a reload that restarts a listener",
        ),
        Clause(
            UDP_CONNECTION,
            "DESIGN.md 1.2",
            "UDP listener connection = a client 5-tuple holding an allocation, until it ends",
        ),
        Clause(
            STREAM_FRAMES,
            "DESIGN.md 1.2",
            "TCP/TLS listener packets: one per framed STUN message or ChannelData frame",
        ),
        Clause(
            CLUSTER_ADMITTED,
            "DESIGN.md 1.2",
            "cluster rx: datagrams from admitted peers "
            "only; without a permission, dropped and not counted",
        ),
        Clause(
            TX_LEFT,
            "DESIGN.md 1.3",
            "a tx is a frame that left: a refused send or a withheld answer is not counted",
        ),
        Clause(
            NAME_IS_LISTENER,
            "DESIGN.md 1.2",
            "`name` is the listener's name on every series, cluster ones included",
        ),
        Clause(
            LABELS,
            "DESIGN.md 1.2",
            "exactly the contract's families and labels, no stray stunner_* family",
        ),
        Clause(HELP, "DESIGN.md 1.2", "TYPE and HELP as upstream v0.14-0.16"),
        Clause(
            ADMISSION,
            "DESIGN.md 1.1",
            "a peer outside every routed cluster receives "
            "nothing: the relay is never an open proxy",
        ),
        Clause(
            ERROR_403,
            "DESIGN.md 1.1, RFC 8656 9.2/12.2, RFC 8489 14.8",
            "CreatePermission "
            "and ChannelBind to a refused peer: an error response with ERROR-CODE 403",
        ),
        Clause(
            RELAY,
            "RFC 8656 11-12",
            "what a client sends through a channel or a Send "
            "indication reaches the peer, and the peer's answers come back",
        ),
        Clause(
            LIFETIME,
            "RFC 8656 6.2/7.2",
            "an allocation that is not refreshed ends when its lifetime is over",
        ),
        Clause(
            GUARD,
            "docs/security.md (a stunner extension)",
            "no UDP source gets more unauthenticated answer bytes than it sent",
        ),
        Clause(HARNESS, "e2e harness", "the harness's own preconditions (its peers, its clients)"),
    )
}


def table_clause(family: str) -> str:
    return f"table:{family}"


# -- profiles ---------------------------------------------------------------------------


def _absent(rec: Judged) -> bool:
    return rec.value is None and rec.got in ("absent", "")


def _series_missing(rec: Judged) -> bool:
    """A label check that found some (not all) series, none of them wrong."""
    d = rec.detail
    return bool(d.get("missing")) and not d.get("extra")


def _lazy(rec: Judged) -> bool:
    return _absent(rec) or _series_missing(rec)


def _at_most_one(rec: Judged) -> bool:
    return _absent(rec) or (rec.value is not None and rec.value <= 1)


def _per_read(rec: Judged) -> bool:
    return rec.value is not None and rec.hi is not None and 0 < rec.value <= rec.hi


def _family_absent(rec: Judged) -> bool:
    return _absent(rec) or bool(rec.detail.get("family_absent"))


def _unlabelled(rec: Judged) -> bool:
    return _absent(rec) or bool(rec.detail.get("unlabelled"))


def _cluster_named(rec: Judged) -> bool:
    return _absent(rec) or bool(rec.detail.get("missing"))


@dataclass(frozen=True)
class Deviation:
    clause: str
    behaviour: str
    accepts: Callable[[Judged], bool]


PROFILES: dict[str, tuple[Deviation, ...]] = {
    "spec": (),
    "stunner-v0.15": (
        Deviation(SERIES_AT_ZERO, "series are created on the first event, not at 0", _lazy),
        Deviation(
            UDP_CONNECTION, "the UDP listener gauge counts sockets (1), not clients", _at_most_one
        ),
        Deviation(
            table_clause(contract.ALLOCATIONS_ACTIVE.name),
            "no stunner_allocations_active before v0.19",
            _family_absent,
        ),
        Deviation(
            STREAM_FRAMES, "TCP/TLS packets are counted per read call (<= frames)", _per_read
        ),
    ),
    "stunner-v1": (
        Deviation(
            NAME_IS_LISTENER, "cluster series are named after the cluster (v0.17+)", _cluster_named
        ),
        Deviation(
            table_clause(contract.ALLOCATIONS_ACTIVE.name),
            "stunner_allocations_active has no labels (v0.19+)",
            _unlabelled,
        ),
    ),
}

CONFORMS, DOCUMENTED, FAILS = "conforms", "documented deviation", "fails"


def effective_clause(rec: Judged) -> str:
    """A series that is missing where the truth is 0 is the series-at-zero clause's business;
    a cluster series missing under the listener's name is the naming clause's."""
    if _absent(rec) and rec.lo is not None and rec.lo <= 0 <= (rec.hi or 0):
        return SERIES_AT_ZERO
    return rec.clause


def judge(rec: Judged, profile: str) -> str:
    if rec.ok:
        return CONFORMS
    for dev in PROFILES[profile]:
        if dev.clause == effective_clause(rec) and dev.accepts(rec):
            return DOCUMENTED
    return FAILS


@dataclass
class ClauseVerdict:
    clause: Clause
    verdict: str  # conforms | deviates (documented) | deviates | not testable here
    checks: int
    difference: str


def verdicts(records: Iterable[Judged], profile: str) -> list[ClauseVerdict]:
    """One row per clause, in catalogue order."""
    by: dict[str, list[Judged]] = {cid: [] for cid in CLAUSES}
    for rec in records:
        by.setdefault(effective_clause(rec), []).append(rec)
    rows = []
    for cid, recs in by.items():
        clause = CLAUSES.get(cid, Clause(cid, "?", cid))
        if not recs:
            rows.append(ClauseVerdict(clause, "not testable here", 0, ""))
            continue
        judged = [(r, judge(r, profile)) for r in recs]
        bad = [r for r, v in judged if v == FAILS]
        documented = [r for r, v in judged if v == DOCUMENTED]
        if bad:
            verdict, shown = "deviates (undocumented)", bad
        elif documented:
            verdict, shown = f"deviates (documented in {profile})", documented
        else:
            verdict, shown = "conforms", []
        diff = "; ".join(f"{r.expected} -> {r.got}" for r in shown[:3])
        if len(shown) > 3:
            diff += f"; and {len(shown) - 3} more"
        rows.append(ClauseVerdict(clause, verdict, len(recs), diff))
    return rows


def failing_clauses(records: Iterable[Judged], profile: str) -> set[str]:
    return {
        v.clause.id for v in verdicts(records, profile) if v.verdict == "deviates (undocumented)"
    }


def value_of(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def profile_notes(profile: str) -> list[str]:
    return [f"{d.clause}: {d.behaviour}" for d in PROFILES[profile]]


STRICT_RULES_COST = (
    "Why the spec profile is strict about series at 0: Prometheus' increase() and rate() "
    "need two samples of a series. A series born on its first event (upstream <= v0.16) has "
    "no earlier sample at 0, so the first increments of every new listener, and of every "
    "listener after a restart of stunnerd, are lost to increase()/rate() and to every "
    "dashboard built on them (a listener that carries 10 packets and stops shows an increase "
    "of 0). Series at 0 from the start cost one sample per series per scrape for idle "
    "listeners and make every increment visible."
)

Detail = Mapping[str, Any]
