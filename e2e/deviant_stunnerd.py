"""Test-only: stunnerd behaving the way the `stunner-v0.15` profile documents upstream.

- series are created on the first event (a sample is left out until it was ever non-zero);
- the UDP listener connection gauge counts sockets (1 per UDP listener);
- there is no `stunner_allocations_active`;
- TCP/TLS listener rx packets are counted per read call, not per frame.

With STUNNER_DEVIANT_EXTRA=connections-never-closed it also has a fault no profile documents:
a closed TCP/TLS connection stays on the listener connection gauge. test_conformance proves
the verdicts with it: strict mode fails with exactly the documented clauses, the profile
passes, the extra fault still fails. Patches this process only; production code is untouched.
Usage: python e2e/deviant_stunnerd.py -c FILE -w
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from stunner import listener, telemetry
from stunner.cli import stunnerd

EXTRA = os.environ.get("STUNNER_DEVIANT_EXTRA", "")
UDP_LISTENERS: set[str] = set()
_seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
_honest_collect = telemetry.StunnerCollector.collect
_honest_init = listener.Listener.__init__
_honest_data_received = listener.StreamConnectionProtocol.data_received
_honest_connection_lost = listener.StreamConnectionProtocol.connection_lost


# A gauge's series is born with its first increment, which its companion counter shows even
# when the gauge is back at 0 by the time of the scrape.
COMPANION = {
    "stunner_listener_connections": "stunner_listener_connections_total",
    "stunner_cluster_connections": "stunner_cluster_connections_total",
}


def _v015_collect(self: telemetry.StunnerCollector) -> Iterator[Metric]:
    families = [f for f in _honest_collect(self) if f.name != "stunner_allocations_active"]
    totals = {(s.name, s.labels["name"]): s.value for f in families for s in f.samples}
    for family in families:
        samples = []
        for s in family.samples:
            if family.name == "stunner_listener_connections" and s.labels["name"] in UDP_LISTENERS:
                s = s._replace(value=1.0)  # the listener's one UDP socket
            key = (s.name, tuple(sorted(s.labels.items())))
            companion = COMPANION.get(s.name)
            if s.value or (companion and totals.get((companion, s.labels["name"]))):
                _seen.add(key)
            if key in _seen:  # created on the first event
                samples.append(s)
        family.samples = samples
        yield family


def _init(self: listener.Listener, config: Any, *args: Any, **kwargs: Any) -> None:
    _honest_init(self, config, *args, **kwargs)
    if config.protocol == "UDP":
        UDP_LISTENERS.add(config.name)


def _per_read(self: listener.StreamConnectionProtocol, data: bytes) -> None:
    stats = self.server.stats
    before = stats.rx_packets
    _honest_data_received(self, data)
    stats.rx_packets = before + 1  # one per read call, whatever it carried


def _never_closed(self: listener.StreamConnectionProtocol, exc: Exception | None) -> None:
    _honest_connection_lost(self, exc)
    self.connections.open.add(self)  # still counted as open: the gauge never goes down


telemetry.StunnerCollector.collect = _v015_collect  # type: ignore[method-assign]
listener.Listener.__init__ = _init  # type: ignore[method-assign]
listener.StreamConnectionProtocol.data_received = _per_read  # type: ignore[method-assign]
if EXTRA == "connections-never-closed":
    listener.StreamConnectionProtocol.connection_lost = _never_closed  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(stunnerd.main())
