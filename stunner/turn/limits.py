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
    """Bounds the unauthenticated bytes a UDP source can be sent, without delaying anyone.

    A spoofed source could aim our answers (401 challenges, Binding responses), which are
    larger than the smallest requests, at a victim. The guard lets a source be answered with
    the bytes it sent (no amplification), plus a free allowance: at most ``source_budget``
    bytes per ``window`` beyond what it sent, and at most ``global_budget`` such bytes in all
    sources together per window. So a new source's first answers go out at once (a browser's
    28-byte Allocate gets its 80-byte 401 on the first try), and within one window:

    - to any one address: answer bytes <= bytes received from it + ``source_budget``;
    - in all: answer bytes <= bytes received + ``global_budget``.

    Windows are fixed: the table and the global allowance start afresh every ``window``
    seconds. The table holds at most ``max_sources`` addresses per window; a source that finds
    it full is not answered until the window ends (its client retransmits). Shared by every
    listener of a process; control path only.
    """

    WINDOW = 10.0  # seconds
    SOURCE_BUDGET = 4096  # bytes beyond what the source sent, per source and window
    GLOBAL_BUDGET = 512 * 1024  # bytes beyond what the sources sent, all sources, per window
    MAX_SOURCES = 65536  # addresses tracked per window (about 8 MiB at most)

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        window: float = WINDOW,
        source_budget: int = SOURCE_BUDGET,
        global_budget: int = GLOBAL_BUDGET,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.clock = clock
        self.window = window
        self.source_budget = source_budget
        self.global_budget = global_budget
        self.max_sources = max_sources
        # address -> bytes received from it minus bytes answered, in this window
        self._balance: dict[str, int] = {}
        self._window_start = -window
        self._free_left = global_budget

    def allow(self, ip: str, request_size: int, answer_size: int) -> bool:
        """True (and the answer is charged) if ``answer_size`` unauthenticated bytes may go
        to ``ip``, which has just sent a request of ``request_size`` bytes."""
        now = self.clock()
        if now - self._window_start >= self.window:
            self._window_start = now
            self._balance.clear()
            self._free_left = self.global_budget
        balance = self._balance.get(ip)
        if balance is None:
            if len(self._balance) >= self.max_sources:
                return False  # no room to track it: bounded memory first
            balance = 0
        balance += request_size
        after = balance - answer_size
        if after < 0:
            # Beyond what the source sent: the new part of its debt is free allowance.
            extra = -after - max(0, -balance)
            if -after > self.source_budget or extra > self._free_left:
                self._balance[ip] = balance
                return False
            self._free_left -= extra
        self._balance[ip] = after
        return True
