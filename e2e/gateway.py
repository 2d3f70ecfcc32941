"""Local stunnerd processes: config files (DESIGN 1.1) and process lifetime.

stunnerd runs with `-w`, so tests change its configuration the way the operator does: by
rewriting the watched file (atomically, so it never reads half a file).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from e2e import proc
from e2e.netutil import ProcessExited, poll
from stunner import constants

log = logging.getLogger(__name__)

STUNNERD = (sys.executable, "-m", "stunner.cli.stunnerd")
MISCOUNTING = (sys.executable, str(Path(__file__).with_name("miscounting_stunnerd.py")))
DEVIANT = (sys.executable, str(Path(__file__).with_name("deviant_stunnerd.py")))
USERNAME = "my-user"
PASSWORD = "my-password"
REALM = constants.DEFAULT_REALM


def stunnerd_unavailable_reason(
    argv: tuple[str, ...] = STUNNERD, timeout: float = 20.0
) -> str | None:
    """None if `stunnerd --version` works, else why not (one line)."""
    try:
        proc = subprocess.run(
            [*argv, "--version"], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"stunnerd --version failed: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        return f"stunnerd is not runnable yet: {last[-1] if last else proc.returncode}"
    return None


@dataclass
class ListenerSpec:
    """A listener in stunnerd.conf; `routes` name clusters."""

    name: str
    protocol: str  # UDP | TCP | TLS
    port: int
    routes: list[str]
    cert_b64: str = ""
    key_b64: str = ""

    def to_config(self, address: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "protocol": self.protocol,
            "address": address,
            "port": self.port,
            "routes": list(self.routes),
        }
        if self.cert_b64:
            out["cert"] = self.cert_b64
            out["key"] = self.key_b64
        return out


@dataclass
class ClusterSpec:
    name: str
    endpoints: list[str]

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "type": "STATIC", "protocol": "udp", "endpoints": self.endpoints}


@dataclass
class GatewayConfig:
    """Everything one stunnerd.conf says; `render()` gives the YAML document."""

    name: str
    address: str
    health_port: int
    metrics_url: str  # "" = metrics off
    listeners: list[ListenerSpec] = field(default_factory=list)
    clusters: list[ClusterSpec] = field(default_factory=list)
    loglevel: str = "all:INFO"
    limits: dict[str, Any] = field(default_factory=dict)  # admin.limits, e.g. a lifetime cap

    def render(self) -> dict[str, Any]:
        admin: dict[str, Any] = {
            "name": self.name,
            "loglevel": self.loglevel,
            "metrics_endpoint": self.metrics_url,
            "healthcheck_endpoint": f"http://{self.address}:{self.health_port}",
        }
        if self.limits:
            admin["limits"] = dict(self.limits)
        return {
            "version": constants.API_VERSION,
            "admin": admin,
            "auth": {
                "type": "plaintext",
                "realm": REALM,
                "credentials": {"username": USERNAME, "password": PASSWORD},
            },
            "listeners": [lis.to_config(self.address) for lis in self.listeners],
            "clusters": [c.to_config() for c in self.clusters],
        }


class Gateway:
    """One stunnerd process watching one config file."""

    def __init__(
        self,
        role: str,
        address: str,
        workdir: Path,
        logdir: Path,
        *,
        health_port: int,
        argv: tuple[str, ...] = STUNNERD,
        env: dict[str, str] | None = None,
    ) -> None:
        self.role = role
        self.address = address
        self.health_port = health_port
        self.config_path = workdir / f"stunnerd-{role}.conf"
        self.log_path = logdir / f"stunnerd-{role}.log"
        self.argv = argv
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def write(self, config: GatewayConfig | dict[str, Any] | str) -> None:
        """Replace the watched file in one step."""
        if isinstance(config, GatewayConfig):
            config = config.render()
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_name(self.config_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def start(self, *, ready_timeout: float = 20.0) -> None:
        argv = [*self.argv, "-c", str(self.config_path), "-w", "-l", "all:INFO"]
        log.info("starting %s", " ".join(argv))
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        try:
            poll(self._ready, bool, timeout=ready_timeout, what=f"stunnerd {self.role} /ready")
        except BaseException:
            self.stop()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ready(self) -> bool:
        if not self.alive():
            raise ProcessExited(f"stunnerd {self.role} exited: {self.log_tail()}")
        url = f"http://{self.address}:{self.health_port}/ready"
        return requests.get(url, timeout=2).status_code == 200

    def log_tail(self) -> str:
        return proc.log_tail(self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT: stunnerd exits at once (SIGTERM would drain allocations first)."""
        child, self.proc = self.proc, None
        proc.stop(child, signal.SIGINT, timeout)
