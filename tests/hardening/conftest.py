"""Hardening tests: the in-process gateway of the integration tests, and the `slow` gate.

Tests marked ``slow`` here (a real Prometheus, long floods) are skipped unless the run selects
them with ``-m slow`` (or any ``-m`` expression), so ``nox -s tests`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import gateway  # noqa: F401 - the shared fixture

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow tests/hardening`")
    for item in items:
        if item.get_closest_marker("slow") and HERE in item.path.parents:
            item.add_marker(skip)
