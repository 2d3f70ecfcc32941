"""TURN (RFC 8656): allocations, their clients, the data path and the per-listener server."""

from .allocation import Allocation
from .answers import TurnError
from .clients import Client, DatagramClient, StreamClient
from .events import AllocationObserver, DeleteReason
from .server import TurnServer

__all__ = [
    "Allocation",
    "AllocationObserver",
    "Client",
    "DatagramClient",
    "DeleteReason",
    "StreamClient",
    "TurnError",
    "TurnServer",
]
