"""Abuse limits that span allocations: per-user and total quotas, and the UDP
amplification guard.

Both are control-path only; nothing here runs per relayed datagram.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Quotas:
    """Process-wide allocation accounting, shared by every listener's server."""

    def __init__(self, user_quota: int = 0, total: int = 0) -> None:
        self.user_quota = user_quota  # allocations per username, 0 = no limit
        self.total = total  # allocations in this process, 0 = no limit
        self.count = 0
        self.per_user: dict[str, int] = {}

    def refusal(self, username: str) -> int | None:
        """The TURN error code that refuses one more allocation for ``username``, if any."""
        if self.user_quota and self.per_user.get(username, 0) >= self.user_quota:
            return 486  # Allocation Quota Reached: this user's quota
        if self.total and self.count >= self.total:
            return 508  # Insufficient Capacity: the server's
        return None

    def add(self, username: str) -> None:
        self.count += 1
        self.per_user[username] = self.per_user.get(username, 0) + 1

    def remove(self, username: str) -> None:
        self.count -= 1
        left = self.per_user.get(username, 1) - 1
        if left > 0:
            self.per_user[username] = left
        else:
            self.per_user.pop(username, None)


class AmplificationGuard:
    """Never send a UDP source more unauthenticated bytes than it sent us.

    A spoofed source could otherwise aim our 401 challenges (and Binding answers), which are
    larger than the smallest requests, at a victim. Each source IP earns credit with the bytes
    of its unauthenticated requests and spends it on our answers; an answer that does not fit
    is dropped, and the client's retransmission earns the rest. A real client pays one
    retransmission (about 0.5 s) on its first request; an attacker gets at most 1:1.
    """

    WINDOW = 30.0
    MAX_SOURCES = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._credit: dict[str, tuple[float, int]] = {}

    def earn(self, ip: str, size: int) -> None:
        now = self.clock()
        since, credit = self._credit.get(ip, (now, 0))
        if now - since > self.WINDOW:
            credit = 0
        if len(self._credit) >= self.MAX_SOURCES and ip not in self._credit:
            self._credit.clear()  # bounded memory; losing credit only delays clients
        self._credit[ip] = (now, credit + size)

    def fits(self, ip: str, size: int) -> bool:
        return size <= self._credit.get(ip, (0.0, 0))[1]

    def spend(self, ip: str, size: int) -> bool:
        """True (and the credit is spent) if an answer of ``size`` bytes may go to ``ip``."""
        since, credit = self._credit.get(ip, (0.0, 0))
        if size > credit:
            return False
        self._credit[ip] = (since, credit - size)
        return True
