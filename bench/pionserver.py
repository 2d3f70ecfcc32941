"""pion/turn, the engine upstream STUNner relays with, as the bench's third server.

``bench/pion/main.go`` (built by ``bench.pionbuild``) serves TURN on one address over UDP and
TCP, and over TLS when given a certificate; it is started, probed with a STUN Binding and
measured exactly as coturn is. It runs with ``GOMAXPROCS=1`` by default: coturn gets one relay
thread and stunnerd is one process, so each server's Go code, C code or Python code runs on
one core at a time, and a CPU-second means the same for all three (see ``bench.pionreport``).
Stock pion leaves its UDP sockets at the kernel's default buffers; here every UDP socket asks
for what stunnerd's and coturn's ask for, so a burst meets the same room on all three.
"""

from __future__ import annotations

from pathlib import Path

from stunner.udp import SOCKET_BUFFER
from testkit.ports import free_port

from .servers import RELAY_PORTS, Credentials, ServerProcess

GOMAXPROCS = 1


class Pion(ServerProcess):
    """bench/pion/main.go: UDP+TCP on ``port``, TLS on ``tls_port`` if given a cert and key."""

    name = "pion"

    def __init__(
        self,
        workdir: Path,
        host: str,
        creds: Credentials,
        binary: Path,
        *,
        gomaxprocs: int = GOMAXPROCS,
        tls: tuple[Path, Path] | None = None,
        log_level: str = "warn",
        socket_buffer: int = SOCKET_BUFFER,
        relay_ports: tuple[int, int] = RELAY_PORTS,
    ) -> None:
        super().__init__(workdir, host, creds)
        self.binary = binary
        self.gomaxprocs = gomaxprocs
        self.tls = tls or self.cert  # the base class made one when openssl is installed
        if self.tls is None:
            self.tls_port = None
        elif self.tls_port is None:
            self.tls_port = free_port(host, udp=False)
        self.log_level = log_level
        self.socket_buffer = socket_buffer
        self.relay_ports = relay_ports

    def command(self) -> list[str]:
        creds = self.creds
        argv = [
            str(self.binary),
            "-host", self.host,
            "-port", str(self.port),
            "-min-port", str(self.relay_ports[0]),
            "-max-port", str(self.relay_ports[1]),
            "-realm", creds.realm,
            "-user", f"{creds.user}:{creds.password}",
            "-log-level", self.log_level,
            "-gomaxprocs", str(self.gomaxprocs),
            "-socket-buffer", str(self.socket_buffer),
        ]  # fmt: skip
        if self.tls is not None and self.tls_port is not None:
            cert, key = self.tls
            argv += ["-tls-port", str(self.tls_port), "-cert", str(cert), "-key", str(key)]
        return argv
