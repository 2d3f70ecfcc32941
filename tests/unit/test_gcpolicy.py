"""GcPolicy: what it freezes, what a young collection still frees, and what only the full
collection frees (an object that dies in a cycle after it was frozen)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stunner.gcpolicy import GcPolicy
from tests.unit.test_refusal_logs import Clock


class Node:
    """A cycle of one: freed only by the collector, never by its reference count."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def policy() -> Iterator[GcPolicy]:
    gc.enable()
    made = GcPolicy(full_interval=3600.0, clock=Clock())
    made.full()  # as start() does, without the loop's timer
    try:
        yield made
    finally:
        made.close()


def test_a_full_collection_unfreezes_collects_and_freezes(policy: GcPolicy) -> None:
    assert policy.full_collections == 1
    assert gc.get_freeze_count() > 0
    # What the collector still walks is what the test made since: a small part.
    assert len(gc.get_objects()) < gc.get_freeze_count() / 10


def test_a_cycle_that_died_before_the_tick_is_collected(policy: GcPolicy) -> None:
    node = Node()
    dead = weakref.ref(node)
    del node
    policy.tick()
    assert dead() is None
    assert policy.full_collections == 1


def test_a_refcounted_object_frozen_alive_is_freed_when_dropped(policy: GcPolicy) -> None:
    held = [Node.__new__(Node)]  # no cycle: its reference count frees it
    alive = weakref.ref(held[0])
    policy.tick()  # frozen
    held.clear()
    assert alive() is None


def test_a_cycle_frozen_alive_waits_for_the_full_collection(policy: GcPolicy) -> None:
    held = [Node()]
    frozen = weakref.ref(held[0])
    policy.tick()  # frozen while alive
    held.clear()  # now garbage, in a cycle, out of the collector's reach
    gc.collect()
    assert frozen() is not None  # the leak that the allocations must not have
    policy.clock.now += 3599.0  # type: ignore[attr-defined]
    policy.tick()
    assert frozen() is not None
    policy.clock.now += 1.0  # type: ignore[attr-defined]
    policy.tick()  # an hour since the last full collection
    assert policy.full_collections == 2
    assert frozen() is None


def test_no_full_collection_when_disabled() -> None:
    clock = Clock()
    policy = GcPolicy(full_interval=0.0, clock=clock)
    try:
        policy.full()
        clock.now += 10 * 3600
        policy.tick()
        assert policy.full_collections == 1
    finally:
        policy.close()
    assert gc.get_freeze_count() == 0
