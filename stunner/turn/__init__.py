"""TURN allocations, relay sockets and the per-listener server (RFC 8656)."""

from .allocation import Allocation, ClientEndpoint
from .server import TurnError, TurnServer

__all__ = ["Allocation", "ClientEndpoint", "TurnError", "TurnServer"]
