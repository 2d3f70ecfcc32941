"""What the TURN core tells the outside about allocations: created, and deleted with a reason.

The core calls an injected ``AllocationObserver``; counting (stunner.turn.datapath), the
daemon's drain and anything else that cares listen there, so the core needs no telemetry.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .allocation import Allocation


class DeleteReason(enum.StrEnum):
    """Why an allocation ended."""

    REFRESH0 = "refresh0"  # the client sent Refresh with LIFETIME 0
    EXPIRED = "expired"  # its lifetime ran out
    CONNECTION_CLOSED = "connection_closed"  # its TCP/TLS connection went away
    LISTENER_REMOVED = "listener_removed"  # its listener was removed or restarted
    SHUTDOWN = "shutdown"  # stunnerd stopped


class AllocationObserver(Protocol):
    def created(self, alloc: Allocation) -> None: ...

    def deleted(self, alloc: Allocation, reason: DeleteReason) -> None: ...
