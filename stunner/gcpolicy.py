"""stunnerd's garbage-collector policy: no collection walks every live allocation.

Why: CPython's cyclic collector stops the whole process while it runs, and a full (generation
2) collection walks every object the collector tracks. A live UDP allocation is 14 of them
(tests/integration/test_gc_footprint.py), so at 10,000 allocations a full collection took
45-100 ms of CPU (more wall time on a busy machine), and every call on the server got that
much jitter. Churn triggers one whenever the objects promoted since the last one reach a
quarter of the long-lived total: at 10,000 allocations and 100 new ones a second, about every
half a minute.

How: long-lived objects are moved out of the collector's reach with ``gc.freeze()`` (the
"permanent generation", which no collection walks). ``start`` collects once and freezes what
the start-up made; then every ``freeze_interval`` seconds ``tick`` collects the young
generations (they hold only what was made since the last tick: cheap) and freezes what
survived. A full collection then walks only the objects made since the last freeze, not the
allocations. Every ``full_interval`` seconds (0: never), ``tick`` unfreezes everything and
runs one full collection instead: one pause an hour by default, in place of one every few
seconds to minutes under churn.

Why it is safe: a frozen object is still freed the moment its reference count drops to zero;
only an object that dies in a reference cycle stays in memory (until the next full
collection). A deleted or expired allocation (its relay socket, receiver, client and loop
reader) and a closed TCP/TLS connection are freed by reference counting alone: no cycle holds
them (StreamClient.release breaks the connection's; the tests run with the collector off and
find none of their objects left). What else could die in a cycle is rare (an exception kept
with its traceback, a config reload's objects) and is bounded by ``full_interval``. Freezing
does not copy or move memory: it relinks the collector's lists, O(1).

One cost: CPython stops tracking dicts of plain values only in full collections, so an
allocation frozen with its channel dicts tracked keeps them tracked (up to 4 more objects
each) until the hourly collection; they are frozen, so no collection walks them meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("stunner.gc")

FREEZE_INTERVAL = 10.0
"""Seconds between two freezes of what survived: the objects a full collection may walk are
at most this many seconds' worth of new ones."""

FULL_INTERVAL = 3600.0
"""Seconds between two full collections of everything (unfrozen first): frees whatever died
in a cycle meanwhile. 0: never."""


class GcPolicy:
    """Freezes long-lived objects at safe points (between two loop callbacks, after a young
    collection) and runs a full collection only every ``full_interval`` seconds."""

    def __init__(
        self,
        freeze_interval: float = FREEZE_INTERVAL,
        full_interval: float = FULL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.freeze_interval = freeze_interval
        self.full_interval = full_interval
        self.clock = clock
        self.last_full = 0.0
        self.full_collections = 0  # the full collections ``tick`` ran (unfrozen)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Collect once (start-up's garbage), freeze what is left, and tick from now on."""
        self.full()
        self._schedule()

    def tick(self) -> None:
        """A young collection and a freeze of its survivors, or a full collection when it is
        time for one."""
        if self.full_interval and self.clock() - self.last_full >= self.full_interval:
            self.full()
            return
        gc.collect(1)  # what was made since the last tick and is garbage already (cycles too)
        gc.freeze()

    def full(self) -> None:
        """Unfreeze, collect everything, freeze again: frees what died in a cycle."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.last_full = self.clock()
        self.full_collections += 1
        logger.debug(
            "full collection: %d unreachable, %d objects frozen, %.1f ms",
            found,
            gc.get_freeze_count(),
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        """Stop ticking and hand every object back to the collector."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gc.unfreeze()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.freeze_interval, self._ticked)

    def _ticked(self) -> None:
        self.tick()
        self._schedule()
