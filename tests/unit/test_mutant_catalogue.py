"""The fault catalogue of `nox -s mutants` (e2e/faults.py) still applies to the code.

A refactor that moves or rewrites a snippet fails here, not silently in the mutants run:
re-target the fault's snippet to the new code, keeping what the fault means.
"""

from __future__ import annotations

import ast

import pytest

from e2e.faults import FAULTS, Edit, Fault
from e2e.mutate import SCENARIOS, FaultDoesNotApply, apply_edit, mutated_sources


def test_at_least_fifteen_faults_with_unique_ids() -> None:
    assert len(FAULTS) >= 15
    assert len({f.id for f in FAULTS}) == len(FAULTS)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault_applies_exactly_once_and_compiles(fault: Fault) -> None:
    sources = mutated_sources(fault)
    for path, text in sources.items():
        ast.parse(text, filename=path)  # the mutant is still Python
    assert set(fault.killers) <= set(SCENARIOS), "killers must be e2e scenarios the run knows"


def test_applier_refuses_a_snippet_that_is_missing_or_ambiguous() -> None:
    with pytest.raises(FaultDoesNotApply, match="occurs 0 times"):
        apply_edit("a = 1\n", Edit("x.py", "b = 2\n", "b = 3\n"))
    with pytest.raises(FaultDoesNotApply, match="occurs 2 times"):
        apply_edit("a = 1\na = 1\n", Edit("x.py", "a = 1\n", "a = 2\n"))
    assert apply_edit("a = 1\n", Edit("x.py", "a = 1\n", "a = 2\n")) == "a = 2\n"
