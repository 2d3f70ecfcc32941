"""What every target gives the scenarios: listeners, credentials, a peer, a Prometheus scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from e2e.checks import Scope
from e2e.clients import Address, Endpoint

if TYPE_CHECKING:
    from e2e.targets.local import LocalLab
    from testkit.echo import EchoThread

# A peer no cluster should hold (TEST-NET-1, RFC 5737).
DEFAULT_OUTSIDE_PEER: Address = ("192.0.2.1", 9)


@dataclass
class Target:
    """A gateway hierarchy to test.

    `listeners`: routed to a cluster that holds `peer` (the echo backend), by protocol.
    `denied`: a listener routed to a cluster without `peer` (None: use `outside_peer` instead).
    `listener_names`: every listener the gateway has, for the no-stray-series check (None when
    unknown, e.g. someone else's deployment).
    """

    kind: str
    listeners: dict[str, Endpoint]
    username: str
    password: str
    peer: Address
    scope: Scope
    denied: Endpoint | None = None
    outside_peer: Address = DEFAULT_OUTSIDE_PEER
    listener_names: set[str] | None = None
    backend: EchoThread | None = None
    uclient: Endpoint | None = None
    lab: LocalLab | None = None
    notes: list[str] = field(default_factory=list)
    # Traffic shapes (e2e/shapes.py): an asymmetric peer (None: those shapes are not testable
    # here), where strangers send from ('' = this host's default), and, locally, one listener
    # per shape and protocol ("asym/udp") so that shapes run side by side.
    asymmetric_peer: Address | None = None
    stranger_host: str = ""
    shape_listeners: dict[str, Endpoint] = field(default_factory=dict)

    def shape_endpoint(self, shape: str, protocol: str) -> Endpoint | None:
        """The listener a shape drives: its own (local), or the target's one for `protocol`."""
        return self.shape_listeners.get(f"{shape}/{protocol}") or self.listeners.get(protocol)
