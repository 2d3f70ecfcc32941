"""Rate-limited log lines for refusals: every refusal leaves a trace, and a flood cannot fill
the disk.

Each (event, source) pair may log ``burst`` lines per ``interval`` seconds; past that, lines
are counted and the next line that gets through says how many were suppressed. A global cap
bounds the total across all sources, so a spoofed flood from many addresses is bounded too.
The table of sources is bounded (``max_keys``): when full it is cleared, which can only let a
few extra lines through. Control path only: never call this per relayed datagram.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """``log(event, source, msg, *args)``: at most ``burst`` lines per key per ``interval``,
    and at most ``global_burst`` lines in all per ``interval``."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.INFO,
        burst: int = 5,
        interval: float = 60.0,
        global_burst: int = 100,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.burst = burst
        self.interval = interval
        self.global_burst = global_burst
        self.max_keys = max_keys
        self.clock = clock
        # key -> [window start, lines logged in the window, lines suppressed since last line]
        self._keys: dict[tuple[str, str], list[float]] = {}
        self._global = [0.0, 0.0]  # window start, lines logged in it
        self.suppressed_total = 0

    def log(
        self,
        event: str,
        source: str,
        msg: str,
        *args: object,
        logger: logging.Logger | None = None,
        level: int | None = None,
    ) -> bool:
        """Log one line if the limits allow; True if it was written. ``logger`` and ``level``
        override the defaults for this line (one limiter can serve several scopes and levels,
        and they share its global cap); a line whose level is off costs no state."""
        logger = logger or self.logger
        level = self.level if level is None else level
        if not logger.isEnabledFor(level):
            return False
        now = self.clock()
        key = (event, source)
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= self.max_keys:
                self._keys.clear()
            state = self._keys[key] = [now, 0.0, 0.0]
        if now - state[0] >= self.interval:
            state[0], state[1] = now, 0.0
        if now - self._global[0] >= self.interval:
            self._global[0], self._global[1] = now, 0.0
        if state[1] >= self.burst or self._global[1] >= self.global_burst:
            state[2] += 1
            self.suppressed_total += 1
            return False
        state[1] += 1
        self._global[1] += 1
        suppressed = int(state[2])
        state[2] = 0.0
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)
        return True
