"""The log lines of one listener's refusals and allocation ends, rate-limited per source.

Every refusal leaves a trace (GUIDE: a metric and a rate-limited log line), and a flood cannot
fill the disk: each (event, source IP) pair may write ``BURST`` lines per ``INTERVAL`` seconds,
all sources together ``GLOBAL_BURST`` lines per listener (stunner.ratelog). Levels:

- INFO: authentication failures (user and source; never a password), refused peers (403),
  quota and capacity refusals (486, 508), answers the amplification guard withheld, TLS
  handshake failures, allocation ends and their reason.
- DEBUG: the other error answers (400, 420, 437, 438, 440-443): protocol noise that
  standards-following clients cause every day (a stale nonce, an IPv6 or TCP allocation a
  browser tries first, a retransmission after a restart); they say nothing about an attack
  or about capacity.

The first 401 challenge, and 438 for a nonce that aged out, are not failures. Control path
only: nothing here runs per relayed datagram.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..ratelog import RateLimitedLog
from ..stun import Address, Message, Method
from .answers import TurnError
from .events import DeleteReason

logger = logging.getLogger("stunner.turn")
tls_logger = logging.getLogger("stunner.listener")

BURST = 5  # lines per (event, source IP) per INTERVAL
INTERVAL = 60.0  # seconds
GLOBAL_BURST = 100  # lines per listener per INTERVAL, all sources together
USERNAME_CHARS = 64  # a username is quoted up to this many characters
INFO_CODES = frozenset({403, 486, 508})


def _method(request: Message) -> str:
    try:
        return Method(request.method).name
    except ValueError:
        return f"0x{request.method:03x}"


def _user(username: str) -> str:
    """A client-chosen username, quoted and cut: it cannot forge or flood a log line."""
    cut = username[:USERNAME_CHARS]
    return repr(cut) + ("..." if len(username) > USERNAME_CHARS else "")


class RefusalLog:
    """What one listener tells the operator about the requests it refuses."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.lines = RateLimitedLog(
            logger, burst=BURST, interval=INTERVAL, global_burst=GLOBAL_BURST, clock=clock
        )

    def auth_failed(self, client: Address, request: Message, username: str, why: str) -> None:
        self.lines.log(
            "auth",
            client[0],
            "%s: authentication failed: %s from %s:%d, user %s: %s",
            self.name,
            _method(request),
            client[0],
            client[1],
            _user(username),
            why,
        )

    def error(self, client: Address, request: Message, username: str, exc: TurnError) -> None:
        """An error answer to an authenticated request (403 with its peer, 486, 508 at INFO)."""
        level = logging.INFO if exc.code in INFO_CODES else logging.DEBUG
        self.lines.log(
            f"error {exc.code}",
            client[0],
            "%s: %s from %s:%d, user %s, refused %d (%s)%s",
            self.name,
            _method(request),
            client[0],
            client[1],
            _user(username),
            exc.code,
            exc.reason,
            f": {exc.detail}" if exc.detail else "",
            level=level,
        )

    def unauthenticated_error(self, client: Address, request: Message, code: int) -> None:
        """An error answer before authentication (400, 420, 438): protocol noise, DEBUG."""
        self.lines.log(
            f"error {code}",
            client[0],
            "%s: %s from %s:%d answered %d",
            self.name,
            _method(request),
            client[0],
            client[1],
            code,
            level=logging.DEBUG,
        )

    def withheld(self, client: Address, request: Message) -> None:
        """An unauthenticated answer the amplification guard did not send: the client waits
        for its retransmission, so a crowd of clients behind one address (a NAT) shows here."""
        self.lines.log(
            "withheld",
            client[0],
            "%s: answer to %s from %s:%d withheld: over the amplification budget",
            self.name,
            _method(request),
            client[0],
            client[1],
        )

    def deleted(self, client: Address, what: str, reason: DeleteReason) -> None:
        self.lines.log(
            f"deleted {reason}", client[0], "%s: %s deleted: %s", self.name, what, reason.value
        )

    def deleted_all(self, count: int, reason: DeleteReason) -> None:
        """One line for a listener's bulk end (removed, restarted, shutdown), not one each."""
        if count:
            logger.info("%s: %d allocation(s) deleted: %s", self.name, count, reason.value)

    def tls_failed(self, client: Address, why: str, level: int = logging.INFO) -> None:
        self.lines.log(
            "tls",
            client[0],
            "%s: TLS handshake from %s:%d failed: %s",
            self.name,
            client[0],
            client[1],
            why,
            logger=tls_logger,
            level=level,
        )
