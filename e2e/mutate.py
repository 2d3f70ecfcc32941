"""`nox -s mutants`: seed each fault of e2e/faults.py into a copy of the tree, run the e2e
scenarios against the mutated stunnerd, and print the kill matrix.

Per fault: copy the repository (without .git, .nox, reports) to a scratch directory, apply
the fault's edits (refusing loudly if a snippet does not match exactly once), and run pytest
on e2e/ from that copy, so the harness starts the copy's stunnerd (`python -m` imports from
the working directory first). The scenarios the catalogue names as killers run first; only if
none of them fails do the other counting scenarios run. A fault is killed when an assertion
of a scenario failed (or a scenario errored); the unit tests never run here.

Usage: python -m e2e.mutate [--only ID ...] [--full] [--list] [-- extra pytest args]
Writes e2e-report/mutants-<time>/kill-matrix.md and .json (and e2e-report/mutants-latest);
exits 1 if any fault survived.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.faults import BY_ID, FAULTS, Edit, Fault

ROOT = Path(__file__).resolve().parent.parent
SKIP = {
    ".git",
    ".nox",
    "e2e-report",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".venv",
    ".env",
    ".ci-venv",
}
# The scenarios that exercise stunnerd's counting and lifecycle; the others check the
# harness, the charts or the CLI and cannot see a counting fault.
SCENARIOS = (
    "test_traffic",
    "test_waves",
    "test_shapes",
    "test_denied_peer",
    "test_refusals",
    "test_reload",
    "test_restart",
)


class FaultDoesNotApply(ValueError):
    """A snippet of the catalogue no longer matches the code exactly once: re-target it."""


def apply_edit(text: str, edit: Edit) -> str:
    count = text.count(edit.old)
    if count != 1:
        raise FaultDoesNotApply(
            f"{edit.path}: the snippet occurs {count} times (must be exactly once):\n{edit.old}"
        )
    return text.replace(edit.old, edit.new)


def mutated_sources(fault: Fault, root: Path = ROOT) -> dict[str, str]:
    """{path: mutated text} for every file the fault touches (edits apply in order)."""
    out: dict[str, str] = {}
    for edit in fault.edits:
        text = out.get(edit.path) or (root / edit.path).read_text()
        try:
            out[edit.path] = apply_edit(text, edit)
        except FaultDoesNotApply as exc:
            raise FaultDoesNotApply(f"fault {fault.id}: {exc}") from None
    return out


def copy_tree(dest: Path, root: Path = ROOT) -> None:
    shutil.copytree(root, dest, ignore=lambda _d, names: [n for n in names if n in SKIP])


@dataclass
class Outcome:
    fault: Fault
    killed: bool = False
    caught_by: list[str] = field(default_factory=list)  # scenario (check) names
    tests_failed: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def _pytest(copy: Path, modules: Sequence[str], extra: Sequence[str]) -> tuple[int, dict]:
    paths = [f"e2e/{m}.py" for m in modules]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "e2e",
           *paths, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(copy / "mutant-pytest.log", "ab") as log:
        rc = subprocess.run(cmd, cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    report = copy / "e2e-report" / "latest" / "report.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    return rc, data


def _findings(data: dict) -> tuple[list[str], list[str]]:
    scenarios = sorted(
        {r["scenario"] for r in data.get("records", []) if not r["ok"] and not r["negative"]}
    )
    tests = sorted(
        t.split("::")[-1]
        for t, outcome in data.get("tests", {}).items()
        if outcome == "failed" or outcome.startswith("error")
    )
    return scenarios, tests


def run_fault(fault: Fault, base: Path, scratch: Path, full: bool, extra: Sequence[str]) -> Outcome:
    """Seed `fault` into a copy of `base` (the tree as it was when the run started)."""
    outcome = Outcome(fault)
    started = time.monotonic()
    copy = scratch / fault.id
    try:
        sources = mutated_sources(fault, base)
    except FaultDoesNotApply as exc:
        outcome.error = str(exc)
        return outcome
    copy_tree(copy, base)
    for path, text in sources.items():
        (copy / path).write_text(text)
    where = subprocess.run(
        [sys.executable, "-c", "import stunner; print(stunner.__file__)"],
        cwd=copy, capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(copy)):
        outcome.error = f"the copy's stunner is not the one imported ({where or 'nothing'})"
        return outcome
    killers = [m for m in SCENARIOS if m in fault.killers]
    others = [m for m in SCENARIOS if m not in fault.killers]
    batches = [killers + others] if full else [killers, others]
    for batch in batches:
        if not batch:
            continue
        shutil.rmtree(copy / "e2e-report", ignore_errors=True)
        rc, data = _pytest(copy, batch, extra)
        outcome.ran += batch
        scenarios, tests = _findings(data)
        outcome.caught_by += scenarios
        outcome.tests_failed += tests
        if rc not in (0, 1):
            outcome.error = f"pytest exited {rc} (see {copy / 'mutant-pytest.log'})"
        if scenarios or tests:
            outcome.killed = True
            break
    outcome.seconds = time.monotonic() - started
    return outcome


def matrix(outcomes: Sequence[Outcome], seconds: float) -> str:
    killed = sum(o.killed for o in outcomes)
    lines = [
        "# Fault catalogue: kill matrix",
        "",
        f"{killed} of {len(outcomes)} faults killed ({100 * killed / max(1, len(outcomes)):.0f}%)"
        f" in {seconds:.0f} s. Each fault was seeded alone into a copy of the tree; only the "
        "e2e scenarios ran.",
        "",
        "| fault | what it does | killed | caught by (scenarios with failed checks) "
        "| tests failed | s |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        verdict = "yes" if o.killed else ("**ERROR**" if o.error else "**SURVIVED**")
        caught = "; ".join(o.caught_by) or (o.error or "-")
        lines.append(
            f"| {o.fault.id} | {o.fault.description} | {verdict} | {caught} | "
            f"{', '.join(o.tests_failed) or '-'} | {o.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.mutate", description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="ID", help="these faults only")
    parser.add_argument("--full", action="store_true", help="run every scenario per fault")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    faults = [BY_ID[i] for i in args.only] if args.only else list(FAULTS)
    if args.list:
        for f in faults:
            print(f"{f.id:32} {f.description}  [killers: {', '.join(f.killers)}]")
        return 0
    for f in faults:
        mutated_sources(f)  # refuse loudly before anything runs
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = ROOT / "e2e-report" / f"mutants-{stamp}"
    outdir.mkdir(parents=True)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="stunner-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)  # one snapshot: edits made during the run do not leak into it
        for f in faults:
            o = run_fault(f, base, Path(tmp), args.full, extra)
            outcomes.append(o)
            state = "killed" if o.killed else ("ERROR " + o.error if o.error else "SURVIVED")
            print(f"{f.id:32} {state:8} {o.seconds:5.0f} s  {'; '.join(o.caught_by)}", flush=True)
            if (Path(tmp) / f.id / "mutant-pytest.log").exists():
                shutil.copy(Path(tmp) / f.id / "mutant-pytest.log", outdir / f"{f.id}.log")
            shutil.rmtree(Path(tmp) / f.id, ignore_errors=True)
    text = matrix(outcomes, time.monotonic() - started)
    (outdir / "kill-matrix.md").write_text(text)
    (outdir / "kill-matrix.json").write_text(json.dumps([
        {"fault": o.fault.id, "killed": o.killed, "caught_by": o.caught_by,
         "tests_failed": o.tests_failed, "ran": o.ran, "seconds": round(o.seconds, 1),
         "error": o.error} for o in outcomes], indent=1))  # fmt: skip
    latest = outdir.parent / "mutants-latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(outdir.name)
    print()
    print(text)
    print(f"kill matrix: {outdir / 'kill-matrix.md'}")
    return 0 if all(o.killed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
