"""Loopback addresses leased for a run (so that concurrent runs never collide), and the
harness's waiting policy on top of testkit's. Free ports and waiting come from testkit."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TypeVar

from testkit import wait
from testkit.ports import port_is_free
from testkit.wait import GiveUp

T = TypeVar("T")

LOCK_DIR = os.path.join(tempfile.gettempdir(), "stunner-e2e-locks")


class ProcessExited(GiveUp):
    """A child process died while we waited for it: waiting longer cannot help."""


def poll(
    fetch: Callable[[], T],
    until: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """testkit's poll with the harness's policy: any exception from `fetch` counts as "not
    yet" (the server may still be starting), except ProcessExited, which ends the wait."""
    return wait.poll(
        fetch, until, timeout=timeout, what=what, interval=interval, retry_on=(Exception,)
    )


@dataclass
class AddressLease:
    """Loopback addresses held for this run through lock files (released on close)."""

    addresses: list[str]
    _locks: list[IO[str]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for handle in self._locks:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._locks.clear()


def lease_addresses(count: int, *, want_tcp_port: int | None = None) -> AddressLease:
    """Reserve `count` distinct 127.0.0.x addresses no other e2e run holds.

    An address is only taken if `want_tcp_port` (the chart's metrics port) is free on it, so
    each gateway can serve metrics on the port the PodMonitor names.
    """
    os.makedirs(LOCK_DIR, exist_ok=True)
    candidates = list(range(10, 250))
    random.shuffle(candidates)
    lease = AddressLease(addresses=[])
    for last in candidates:
        if len(lease.addresses) == count:
            break
        address = f"127.0.0.{last}"
        handle = open(os.path.join(LOCK_DIR, address), "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if want_tcp_port is not None and not port_is_free(
            address, want_tcp_port, (socket.SOCK_STREAM,)
        ):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
            continue
        lease.addresses.append(address)
        lease._locks.append(handle)
    if len(lease.addresses) < count:
        lease.close()
        raise RuntimeError(f"could not lease {count} loopback addresses")
    return lease


@contextlib.contextmanager
def leased_addresses(count: int, *, want_tcp_port: int | None = None) -> Iterator[list[str]]:
    """Context-managed `lease_addresses`."""
    lease = lease_addresses(count, want_tcp_port=want_tcp_port)
    try:
        yield lease.addresses
    finally:
        lease.close()


def parse_duration(text: str) -> float:
    """Prometheus duration ('1s', '500ms', '1m30s') in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in units or not number:
            raise ValueError(f"bad duration {text!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise ValueError(f"bad duration {text!r}: missing unit")
    return total
