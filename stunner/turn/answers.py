"""TURN answers: the error codes with their reason phrases, and response builders."""

from __future__ import annotations

from typing import Any

from ..stun import Class, Message

_ERROR, _SUCCESS = Class.ERROR, Class.SUCCESS  # as globals: no enum metaclass per answer

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}


class TurnError(Exception):
    """A request that fails with a TURN error code; turned into an error response."""

    def __init__(self, code: int, reason: str | None = None, detail: str = "") -> None:
        super().__init__(code, reason or REASONS[code])
        self.code = code
        self.reason = reason or REASONS[code]
        self.detail = detail  # for the log line only (e.g. the refused peer), never sent


def error_response(request: Message, code: int, reason: str | None = None) -> Message:
    response = Message(request.method, _ERROR, request.transaction_id)
    response.attributes["ERROR-CODE"] = (code, reason or REASONS[code])
    return response


def success_response(request: Message, **attributes: Any) -> Message:
    """A success answer; keyword names are attribute names with "_" for "-"."""
    response = Message(request.method, _SUCCESS, request.transaction_id)
    if attributes:
        response.attributes.update({k.replace("_", "-"): v for k, v in attributes.items()})
    return response
