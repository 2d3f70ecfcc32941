"""STUN codec: pure functions and one ``Message`` type; no I/O, no other stunner imports."""

from .attributes import MAGIC_COOKIE, Address, ErrorCode
from .channel import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    is_channel_data,
    pack_channel_data,
    parse_channel_data,
)
from .message import Class, Message, Method, is_stun, new_transaction_id, parse_message

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "MAGIC_COOKIE",
    "Address",
    "Class",
    "ErrorCode",
    "Message",
    "Method",
    "is_channel_data",
    "is_stun",
    "new_transaction_id",
    "pack_channel_data",
    "parse_channel_data",
    "parse_message",
]
