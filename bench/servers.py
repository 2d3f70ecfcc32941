"""The two servers under test, as child processes on loopback: stunnerd and coturn.

Both get the same user, realm, relay port range and peer, and both are probed the same way
(a STUN Binding request) before the bench trusts them. Both serve TURN over UDP and TCP on
``port`` and over TLS on ``tls_port`` (a self-signed certificate from ``bench.certs``; None
when openssl is missing). Every process started here is stopped
by PID in ``stop()``, which callers run in ``finally``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stunner.stun import Class, Message, Method, parse_message
from testkit.ports import free_port

from . import certs, child, procstat

REPO = Path(__file__).resolve().parent.parent
RELAY_PORTS = (20000, 59999)
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Credentials:
    user: str = "bench"
    password: str = "bench-pass"
    realm: str = "bench.stunner"


def binding_answered(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a STUN Binding request to ``host:port`` gets a success response."""
    request = Message(Method.BINDING, Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), (host, port))
            data, _ = sock.recvfrom(2048)
            answer = parse_message(data)
        except (OSError, ValueError):
            return False
    return answer.transaction_id == request.transaction_id and answer.msg_class == Class.SUCCESS


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET ``url``, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


class ServerProcess:
    """A server child process: start, wait until it answers STUN, measure, stop."""

    name = "server"

    tree = REPO  # where the server's Python code runs from (a baseline: an older tree)

    def __init__(self, workdir: Path, host: str, creds: Credentials) -> None:
        self.workdir = workdir
        self.host = host
        self.port = free_port(host)  # UDP and TCP
        self.creds = creds
        self.tls_port: int | None = None
        self.cert: tuple[Path, Path] | None = None
        if certs.openssl_binary() is not None:
            self.tls_port = free_port(host, udp=False)
            self.cert = certs.self_signed(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.argv: list[str] = []

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    @property
    def with_children(self) -> bool:
        return False

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid, self.with_children)

    def cpu_times(self) -> tuple[float, float]:
        return procstat.cpu_times(self.pid, self.with_children)

    def rss_bytes(self) -> int:
        return procstat.rss_bytes(self.pid, self.with_children)

    def command(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self) -> None:
        self.argv = self.command()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tree,
            )

    def _ready(self) -> bool:
        return binding_answered(self.host, self.port)

    def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not self._ready():
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start: {self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready in {READY_TIMEOUT}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_signal(self) -> int:
        return signal.SIGTERM

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stats = procstat.all_stats()
        family = {pid: stats[pid].comm for pid in procstat.tree(proc.pid, stats)[1:]}
        child.stop(proc, self.stop_signal(), STOP_TIMEOUT)
        for pid, comm in family.items():  # workers left behind, by the PIDs seen before
            stat = procstat.read_stat(pid)
            if stat is not None and stat.comm == comm and stat.state != "Z":
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Stunnerd(ServerProcess):
    """stunnerd with UDP, TCP (same port) and TLS listeners on ``host`` and a STATIC cluster
    holding the peer."""

    name = "stunnerd"

    def __init__(
        self,
        workdir: Path,
        host: str,
        creds: Credentials,
        peer_host: str,
        *,
        workers: int = 1,
        metrics: bool = False,
        baseline: Path | None = None,
    ) -> None:
        if baseline is not None:
            # An older tree of this repository (bench --baseline): its stunner package is
            # the one imported, since ``python -m`` puts the working directory first.
            self.name, self.tree = "baseline", baseline
        super().__init__(workdir, host, creds)
        self.peer_host = peer_host
        self.workers = workers
        self.metrics = metrics
        self.metrics_port = free_port(host)
        self.health_port = free_port(host)
        self.config_path = workdir / "stunnerd.json"

    @property
    def with_children(self) -> bool:
        return self.workers > 1

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def listener(self, protocol: str, port: int) -> dict[str, Any]:
        return {
            "name": f"bench/{protocol.lower()}",
            "protocol": protocol,
            "address": self.host,
            "port": port,
            "min_relay_port": RELAY_PORTS[0],
            "max_relay_port": RELAY_PORTS[1],
            "routes": ["bench/peer"],
        }

    def listeners(self) -> list[dict[str, Any]]:
        """UDP as before (its figures stay comparable), TCP on the same port, TLS if a
        certificate could be made."""
        out = [self.listener("UDP", self.port), self.listener("TCP", self.port)]
        if self.tls_port is not None and self.cert is not None:
            tls = self.listener("TLS", self.tls_port)
            tls["cert"], tls["key"] = (base64.b64encode(p.read_bytes()).decode() for p in self.cert)
            out.append(tls)
        return out

    def config(self) -> dict[str, Any]:
        return {
            "version": "v1alpha1",
            "admin": {
                "name": "bench",
                "loglevel": "all:INFO",
                "metrics_endpoint": self.metrics_url if self.metrics else "",
                "healthcheck_endpoint": f"http://{self.host}:{self.health_port}",
                # uclient -t -m N opens 2N connections from one address; coturn caps none.
                "limits": {"tcp_connections_per_source": 0},
            },
            "auth": {
                "type": "plaintext",
                "realm": self.creds.realm,
                "credentials": {"username": self.creds.user, "password": self.creds.password},
            },
            "listeners": self.listeners(),
            "clusters": [
                {"name": "bench/peer", "type": "STATIC", "endpoints": [self.peer_host]},
            ],
        }

    def write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config(), indent=2))
        os.replace(tmp, self.config_path)

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "stunner.cli.stunnerd", "-c", str(self.config_path), "-w"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        return argv

    def _spawn(self) -> None:
        self.write_config()
        super()._spawn()

    def _ready(self) -> bool:
        url = f"http://{self.host}:{self.health_port}/ready"
        return http_status(url, timeout=0.5) == 200 and super()._ready()

    def stop_signal(self) -> int:
        return signal.SIGINT  # exit at once; SIGTERM would drain allocations for an hour

    def set_metrics(self, on: bool, timeout: float = 15.0) -> None:
        """Turn the metrics endpoint on or off live (through ``-w``) and wait until it is so."""
        self.metrics = on
        self.write_config()
        deadline = time.monotonic() + timeout
        while (http_status(self.metrics_url, timeout=0.5) == 200) != on:
            if time.monotonic() > deadline:
                raise RuntimeError(f"metrics endpoint did not turn {'on' if on else 'off'}")
            time.sleep(0.05)


def parse_skmem(ss_output: str) -> tuple[int, int] | None:
    """(receive, send) buffer bytes from the first ``skmem:(...rbN,...tbN...)`` of ``ss -m``."""
    match = re.search(r"skmem:\([^)]*\brb(\d+),[^)]*\btb(\d+)", ss_output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def udp_buffers(host: str, port: int) -> tuple[int, int] | None:
    """SO_RCVBUF and SO_SNDBUF of the UDP socket bound to ``host:port``, as ``ss`` sees them."""
    if shutil.which("ss") is None:
        return None
    try:
        out = subprocess.run(
            ["ss", "-Huamn", "src", f"{host}:{port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_skmem(out.stdout)


def coturn_binary() -> str | None:
    return shutil.which("turnserver")


class Coturn(ServerProcess):
    """coturn's turnserver with one relay thread, long-term credentials, no quotas."""

    name = "coturn"

    def command(self) -> list[str]:
        binary = coturn_binary()
        if binary is None:
            raise FileNotFoundError("turnserver")
        creds = self.creds
        tls = ["--no-tls"]
        if self.tls_port is not None and self.cert is not None:
            tls = ["--cert", str(self.cert[0]), "--pkey", str(self.cert[1]),
                   "--tls-listening-port", str(self.tls_port)]  # fmt: skip
        return [
            binary,
            "-n",  # no config file
            "--no-cli",
            *tls,
            "--no-dtls",
            "--listening-ip", self.host,
            "--relay-ip", self.host,
            "--listening-port", str(self.port),
            "--min-port", str(RELAY_PORTS[0]),
            "--max-port", str(RELAY_PORTS[1]),
            "--relay-threads", "1",
            "--lt-cred-mech",
            "--user", f"{creds.user}:{creds.password}",
            "--realm", creds.realm,
            "--allow-loopback-peers",
            "--no-multicast-peers",
            "--user-quota", "0",
            "--total-quota", "0",
            "--max-bps", "0",
            "--bps-capacity", "0",
            "--userdb", str(self.workdir / "turndb"),
            "--pidfile", str(self.workdir / "turnserver.pid"),
            "--log-file", str(self.workdir / "coturn-server.log"),
            "--simple-log",
            "--no-stdout-log",
        ]  # fmt: skip


def coturn_version() -> str:
    binary = coturn_binary()
    if binary is None:
        return "not installed"
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[-1] if out.stdout or out.stderr else ""


def stunnerd_supports_workers() -> bool:
    """True if this stunnerd has ``--workers`` (its --help says so)."""
    out = subprocess.run(
        [sys.executable, "-m", "stunner.cli.stunnerd", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    return "--workers" in out.stdout
