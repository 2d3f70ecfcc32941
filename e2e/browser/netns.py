"""A network namespace for the browser, joined to the host by one veth pair.

Why a namespace and not plain loopback: the browser then cannot reach anything but the other
end of its veth link. The namespace has `lo`, one veth end (198.18.N.2/30, RFC 2544's benchmark
range) and no default route, so a packet to any other address fails with ENETUNREACH inside
the namespace; the host end (198.18.N.1/30) is where the scenario's stunnerd listens. IPv6 is
off on both ends, so the kernel sends no router solicitations or MLD reports either. Every
packet that leaves the browser's own loopback crosses that one link, where tcpdump records it
for the check "only TURN to stunnerd crossed" (and for an exact count of the listener frames).

Chromium needs the veth: in a namespace with only `lo` it finds no network and never gathers
candidates.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from e2e.netutil import LOCK_DIR

SUBNETS = range(0, 256)  # 198.18.N.0/30 (RFC 2544 benchmark addresses, never routed)


def netns_unavailable_reason() -> str | None:
    """None if this process can create namespaces and veth pairs, else why not."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


@dataclass
class BrowserNet:
    """The namespace, its link addresses and names (from `browser_net()`)."""

    namespace: str
    host_if: str
    ns_if: str
    host_addr: str  # stunnerd's listeners and relay addresses
    ns_addr: str  # the browser's only non-loopback address

    def exec_prefix(self) -> list[str]:
        """Run a command inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace]

    def routes(self) -> list[str]:
        """Destinations of the namespace's IPv4 and IPv6 main routing tables."""
        out = []
        for family in ("-4", "-6"):
            text = subprocess.run(
                ["ip", "-n", self.namespace, family, "route", "show"],
                check=True, capture_output=True, text=True, timeout=10,
            ).stdout  # fmt: skip
            out += [line.split()[0] for line in text.splitlines() if line.strip()]
        return out


def _lease() -> tuple[int, IO[str]]:
    os.makedirs(LOCK_DIR, exist_ok=True)
    candidates = list(SUBNETS)
    random.shuffle(candidates)
    for n in candidates:
        handle = open(os.path.join(LOCK_DIR, f"198.18.{n}.0-30"), "w")  # noqa: SIM115 - held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        if not Path(f"/sys/class/net/se2e{n}h").exists():
            return n, handle
        handle.close()
    raise RuntimeError("no free 198.18.N.0/30 subnet for the browser namespace")


def _no_ipv6(path: str) -> None:
    with contextlib.suppress(OSError), open(path, "w") as fh:
        fh.write("1")


@contextlib.contextmanager
def browser_net() -> Iterator[BrowserNet]:
    """Create the namespace and link; remove both on exit, whatever happened."""
    n, lock = _lease()
    net = BrowserNet(
        namespace=f"stunner-e2e-{n}-{os.getpid()}",
        host_if=f"se2e{n}h",
        ns_if=f"se2e{n}b",
        host_addr=f"198.18.{n}.1",
        ns_addr=f"198.18.{n}.2",
    )
    try:
        _ip("netns", "add", net.namespace)
        try:
            _ip("link", "add", net.host_if, "type", "veth", "peer", "name", net.ns_if)
            try:
                _setup(net)
                yield net
            finally:
                # Deleting one end deletes the pair (the namespace end may be gone already).
                with contextlib.suppress(RuntimeError):
                    _ip("link", "del", net.host_if)
        finally:
            _ip("netns", "del", net.namespace)
    finally:
        lock.close()


def _setup(net: BrowserNet) -> None:
    _no_ipv6(f"/proc/sys/net/ipv6/conf/{net.host_if}/disable_ipv6")
    # IPv6 off in the namespace before the interface moves in: it takes the defaults there.
    ipv6_off = "for k in all default; do echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done"
    subprocess.run(
        [*net.exec_prefix(), "sh", "-c", ipv6_off], check=True, capture_output=True, timeout=10
    )
    _ip("link", "set", net.ns_if, "netns", net.namespace)
    _ip("addr", "add", f"{net.host_addr}/30", "dev", net.host_if)
    _ip("link", "set", net.host_if, "up")
    ns = ("-n", net.namespace)
    _ip(*ns, "addr", "add", f"{net.ns_addr}/30", "dev", net.ns_if)
    _ip(*ns, "link", "set", net.ns_if, "up")
    _ip(*ns, "link", "set", "lo", "up")
