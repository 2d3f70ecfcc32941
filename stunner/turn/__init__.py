"""TURN allocations, relay sockets and the per-listener server (RFC 8656)."""

from .allocation import Allocation
from .server import ClientEndpoint, TurnError, TurnServer

__all__ = ["Allocation", "ClientEndpoint", "TurnError", "TurnServer"]
