"""The per-run report: every assertion (query, expected, got) as markdown and JSON, and a PNG
per metric family over the run, from Prometheus `query_range`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e import clauses, contract
from e2e.checks import Record, Recorder
from e2e.prom import PromClient

log = logging.getLogger(__name__)

MAX_POINTS = 400


@dataclass
class RunInfo:
    """Context for the report header."""

    target: str
    started: float
    finished: float = 0.0
    notes: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> passed/failed/skipped
    profile: str = "spec"
    summary: list[str] = field(default_factory=list)  # the clause table, for the terminal


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _skipped(info: RunInfo) -> dict[str, str]:
    """test id -> why it skipped."""
    return {
        test: outcome.removeprefix("skipped: ").removeprefix("Skipped: ")
        for test, outcome in info.outcomes.items()
        if outcome.startswith("skipped: ")
    }


def _tally(info: RunInfo) -> str:
    """`N passed, N failed, N skipped`: what this target really ran."""
    counts = {"passed": 0, "failed": 0, "skipped": len(_skipped(info))}
    for outcome in info.outcomes.values():
        if outcome == "passed":
            counts["passed"] += 1
        elif not outcome.startswith("skipped: "):
            counts["failed"] += 1
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def write_tables(outdir: Path, recorder: Recorder, info: RunInfo) -> None:
    """report.json and report.md: the target, what skipped and why, one row per assertion."""
    rows = [r.as_dict() for r in recorder.records]
    skipped = _skipped(info)
    mine = [r for r in recorder.records if not r.negative]  # the target's, not the controls'
    failed = sum(1 for r in mine if r.verdict == clauses.FAILS)
    documented = sum(1 for r in mine if r.verdict == clauses.DOCUMENTED)
    caught = sum(1 for r in recorder.records if not r.ok and r.negative)
    table = clauses.verdicts(mine, info.profile)
    meta: dict[str, Any] = {
        "target": info.target,
        "started": info.started,
        "finished": info.finished,
        "duration_s": round(info.finished - info.started, 1),
        "notes": info.notes,
        "tests": info.outcomes,
        "skipped": skipped,
        "assertions": len(rows),
        "assertions_failed": failed,
        "documented_deviations": documented,
        "negative_controls_caught": caught,
        "profile": info.profile,
        "clauses": [
            {
                "clause": v.clause.id,
                "source": v.clause.source,
                "statement": v.clause.statement,
                "verdict": v.verdict,
                "checks": v.checks,
                "difference": v.difference,
            }
            for v in table
        ],
    }
    (outdir / "report.json").write_text(json.dumps({**meta, "records": rows}, indent=1))
    lines = [
        f"# stunner e2e report ({info.target})",
        "",
        f"- target: {info.target}; tests: {_tally(info)}",
        f"- duration: {meta['duration_s']} s; assertions: {len(rows)}, failed: {failed}; "
        f"documented deviations: {documented}; negative controls caught: {caught}",
        f"- profile: {info.profile}"
        + "".join(f"; {n}" for n in clauses.profile_notes(info.profile)),
        *(f"- {note}" for note in info.notes),
        "",
        "## Tests",
        "",
        "| test | outcome |",
        "|---|---|",
        *(f"| {_md_cell(t)} | {o} |" for t, o in info.outcomes.items()),
        "",
        "## Skipped, and why",
        "",
        *([f"- `{t}`: {_md_cell(why)}" for t, why in skipped.items()] or ["- nothing"]),
        "",
        "## Verdict per clause",
        "",
        *clause_table(table),
        "",
        clauses.STRICT_RULES_COST,
        "",
        "## Assertions",
        "",
        "| scenario | check | clause | query | expected | got | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in recorder.records:
        query = _md_cell(r.query)
        lines.append(
            f"| {_md_cell(r.scenario)} | {_md_cell(r.check)} | {r.clause} | `{query}` | "
            f"{_md_cell(r.expected)} | {_md_cell(r.got)} | {_verdict(r)} |"
        )
    (outdir / "report.md").write_text("\n".join(lines) + "\n")
    if info.target == "local":  # our own stunnerd: the full table is in report.md
        counts: dict[str, int] = {}
        for v in table:
            counts[v.verdict] = counts.get(v.verdict, 0) + 1
        info.summary = ["clauses: " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    else:
        info.summary = [f"verdict per clause (profile {info.profile}):", *clause_table(table)]


def clause_table(rows: list[clauses.ClauseVerdict]) -> list[str]:
    """Markdown: one row per clause, conforms / deviates (with the difference) / not testable."""
    out = [
        "| clause | source | statement | verdict | checks | measured difference |",
        "|---|---|---|---|---|---|",
    ]
    for v in rows:
        out.append(
            f"| {v.clause.id} | {_md_cell(v.clause.source)} | {_md_cell(v.clause.statement)} | "
            f"{v.verdict} | {v.checks} | {_md_cell(v.difference) or '-'} |"
        )
    return out


def _verdict(rec: Record) -> str:
    if rec.negative:
        return "ok" if rec.ok else "fail (intended)"
    if rec.verdict == clauses.DOCUMENTED:
        return "deviates (documented)"
    return "ok" if rec.ok else "**FAIL**"


def _series_label(labels: dict[str, str]) -> str:
    """`gateway name direction`: the instance is redundant when the gateway label is there."""
    skip = {"__name__", "job"} | ({"instance"} if "gateway" in labels else set())
    order = ["gateway", "instance", "name", "direction"]
    keys = [k for k in order if k in labels and k not in skip]
    keys += sorted(k for k in labels if k not in order and k not in skip)
    return " ".join(labels[k] for k in keys)


def write_plots(outdir: Path, prom: PromClient, start: float, end: float, selector: str) -> int:
    """One PNG per contract family; returns how many were written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = outdir / "plots"
    plots.mkdir(exist_ok=True)
    step = max(1.0, math.ceil((end - start) / MAX_POINTS))
    written = 0
    for fam in contract.ALL:
        query = f"{fam.name}{{{selector}}}" if selector else fam.name
        try:
            series = prom.query_range(query, start, end, step)
        except Exception as exc:  # a report must not hide the test results
            log.warning("plot %s: %s", fam.name, exc)
            continue
        fig, ax = plt.subplots(figsize=(14, 6))
        fig.subplots_adjust(left=0.05, right=0.66, bottom=0.1, top=0.93)  # legend on the right
        for labels, points in series:
            if points:
                ts = [t - start for t, _ in points]
                ax.step(ts, [v for _, v in points], where="post", label=_series_label(labels))
        ax.set_title(f"{fam.name} ({fam.type})")
        ax.set_xlabel("seconds since run start")
        if series:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), ncol=2)
        fig.savefig(plots / f"{fam.name}.png", dpi=80)
        plt.close(fig)
        written += 1
    return written
