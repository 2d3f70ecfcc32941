"""Test-only: stunnerd with one family deliberately wrong, to prove the checks catch it.

Every `stunner_cluster_bytes_total{direction="tx"}` sample is reported one byte high. Runs
stunnerd's own main() after patching the collector in this process only; production code is
untouched. Usage: python e2e/miscounting_stunnerd.py -c FILE -w
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from prometheus_client.core import Metric

from stunner import telemetry
from stunner.cli import stunnerd

FAMILY = "stunner_cluster_bytes"  # prometheus_client drops "_total" from counter families
DIRECTION = "tx"
OFFSET = 1

_honest_collect = telemetry.StunnerCollector.collect


def _miscounting_collect(self: telemetry.StunnerCollector) -> Iterator[Metric]:
    for family in _honest_collect(self):
        if family.name == FAMILY:
            family.samples = [
                s._replace(value=s.value + OFFSET) if s.labels.get("direction") == DIRECTION else s
                for s in family.samples
            ]
        yield family


telemetry.StunnerCollector.collect = _miscounting_collect  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(stunnerd.main())
