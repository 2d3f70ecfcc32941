"""Free ports on loopback addresses, so that concurrent test runs never collide."""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    """True if `port` can be bound on `host` for every socket type in `kinds`."""
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = True) -> int:
    """A port on `host` free for UDP and TCP (or only the one asked for).

    The kernel picks it for the first kind; the others are checked, and another is tried when
    one is taken. It is free when this returns: a test binds it soon after, and runs in
    parallel lease distinct 127.0.0.x addresses to keep the window harmless.
    """
    kinds = tuple(k for k, on in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)) if on)
    if not kinds:
        raise ValueError("free_port: ask for udp, tcp or both")
    for _ in range(200):
        with socket.socket(socket.AF_INET, kinds[0]) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port_is_free(host, port, kinds):
            return port
    raise RuntimeError(f"no free port on {host}")


def free_udp_block(count: int, host: str = "127.0.0.1", first: int = 47100) -> int:
    """The first of `count` consecutive UDP ports free on `host` (for relay port ranges)."""
    udp = (socket.SOCK_DGRAM,)
    for base in range(first, 60000, count):
        if all(port_is_free(host, port, udp) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free UDP ports on {host}")
