"""The addresses and ports stunnerd's own listeners are bound to: never a relay destination.

A cluster that admits stunnerd's own address (127.0.0.0/8, say, a plausible misconfiguration)
would otherwise let a client relay into a listener of the same stunnerd: TURN over TURN through
itself, an allocation that hides inside another. ChannelBind to such a peer gets 403 and a
Send indication to it is dropped (``Drop.OWN_LISTENER``), whatever the clusters say. Relay
ports are not listener ports, so relay-to-relay (two clients relayed by the same gateway)
still works where a cluster admits the relay addresses.

Control path only: consulted by ChannelBind and Send indications, never per ChannelData.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

WILDCARD = "0.0.0.0"
_CACHE_MAX = 4096


class OwnListeners:
    """``peer in own``: True if ``peer`` is (an address of) a bound listener's address and port.

    A listener bound to 0.0.0.0 matches every local address on its port; whether an address is
    local is asked of the kernel (can a socket bind it?) once, and remembered.
    """

    def __init__(self, bound: Iterable[tuple[str, int]] = ()) -> None:
        self._ports: dict[int, frozenset[str]] = {}
        self._local: dict[str, bool] = {}
        self.update(bound)

    def update(self, bound: Iterable[tuple[str, int]]) -> bool:
        """Replace the set with the listeners bound now; True if it changed."""
        ports: dict[int, set[str]] = {}
        for address, port in bound:
            ports.setdefault(port, set()).add(address or WILDCARD)
        new = {port: frozenset(addresses) for port, addresses in ports.items()}
        changed = new != self._ports
        self._ports = new
        return changed

    def __contains__(self, peer: object) -> bool:
        if not isinstance(peer, tuple) or len(peer) != 2:
            return False
        addresses = self._ports.get(peer[1])
        if not addresses:
            return False
        ip = str(peer[0])
        if ip in addresses:
            return True
        return WILDCARD in addresses and self.is_local(ip)

    def is_local(self, ip: str) -> bool:
        """Whether ``ip`` is an address of this host (the kernel lets us bind it)."""
        local = self._local.get(ip)
        if local is None:
            if len(self._local) >= _CACHE_MAX:
                self._local.clear()
            local = self._local[ip] = _bindable(ip)
        return local

    def __repr__(self) -> str:
        pairs = sorted((a, p) for p, addresses in self._ports.items() for a in addresses)
        return f"OwnListeners({pairs})"


def _bindable(ip: str) -> bool:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        probe.bind((ip, 0))
    except OSError:
        return False
    finally:
        probe.close()
    return True
