"""A deployment someone else runs, built the way a user would: a stunnerd from its own config
file, two peers in its cluster, and a Prometheus that scrapes it from a static config. Nothing
here is shared with the local target's lab; test_external aims `--target external` at it.

`argv()` gives the exact options a user passes (docs/e2e.md shows the same commands).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import yaml

from e2e import proc
from e2e.certs import self_signed
from e2e.clients import ASYMMETRIC_EXTRA, TWICE_EVERY
from e2e.gateway import PASSWORD, USERNAME
from e2e.netutil import leased_addresses, poll
from e2e.prom import PromClient
from testkit.ports import free_port

JOB = "stunner-ext"
NAMES = {
    "udp": "ext/udp-gateway/udp-listener",
    "tcp": "ext/tcp-gateway/tcp-listener",
    "tls": "ext/tls-gateway/tls-listener",
}


class Deployment:
    """stunnerd + peers + Prometheus as child processes, each with its own log in `workdir`."""

    def __init__(self, workdir: Path, gateway: str, peer_host: str) -> None:
        self.workdir = workdir
        self.gateway = gateway
        self.peer = (peer_host, free_port(peer_host, tcp=False))
        self.asymmetric = (peer_host, free_port(peer_host, tcp=False))
        self.ports = {p: free_port(gateway) for p in NAMES}
        self.metrics = free_port(gateway, udp=False)
        self.health = free_port(gateway, udp=False)
        self.prom_port = free_port("127.0.0.1", udp=False)
        self.cert = self_signed(gateway)
        self.ca = workdir / "ca.pem"
        self._procs: list[subprocess.Popen[bytes]] = []

    def stunnerd_config(self) -> dict[str, object]:
        listeners = []
        for proto, name in NAMES.items():
            spec: dict[str, object] = {
                "name": name,
                "protocol": proto.upper(),
                "address": self.gateway,
                "port": self.ports[proto],
                "routes": ["ext/media-plane"],
            }
            if proto == "tls":
                spec |= {"cert": self.cert.cert_b64, "key": self.cert.key_b64}
            listeners.append(spec)
        return {
            "version": "v1alpha1",
            "admin": {
                "name": "ext-stunnerd",
                "metrics_endpoint": f"http://{self.gateway}:{self.metrics}/metrics",
                "healthcheck_endpoint": f"http://{self.gateway}:{self.health}",
            },
            "auth": {
                "type": "plaintext",
                "credentials": {"username": USERNAME, "password": PASSWORD},
            },
            "listeners": listeners,
            "clusters": [
                {"name": "ext/media-plane", "type": "STATIC", "endpoints": [self.peer[0]]}
            ],
        }

    def prometheus_config(self) -> dict[str, object]:
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [f"{self.gateway}:{self.metrics}"]}],
                }
            ],
        }

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        with log:
            self._procs.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            )

    def start(self, prometheus: str) -> None:
        conf = self.workdir / "stunnerd.conf"
        conf.write_text(yaml.safe_dump(self.stunnerd_config(), sort_keys=False))
        prom = self.workdir / "prometheus.yml"
        prom.write_text(yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        self.ca.write_bytes(self.cert.cert_pem)
        py = sys.executable
        echo = [py, "-m", "testkit.echo", "--detached"]
        self._start("peer", [*echo, self.peer[0], "--port", str(self.peer[1])])
        longer = ["--longer", str(ASYMMETRIC_EXTRA), "--twice-every", str(TWICE_EVERY)]
        host, port = self.asymmetric
        self._start("asymmetric-peer", [*echo, host, "--port", str(port), *longer])
        self._start("stunnerd", [py, "-m", "stunner.cli.stunnerd", "-c", str(conf)])
        self._start(
            "prometheus",
            [
                prometheus,
                f"--config.file={prom}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
                "--log.level=warn",
            ],
        )
        client = PromClient(f"http://127.0.0.1:{self.prom_port}")
        poll(
            lambda: client.query(f'up{{job="{JOB}"}}'),
            lambda rows: bool(rows) and rows[0][1] == 1.0,
            timeout=30,
            what="the deployment's Prometheus scraping its stunnerd",
        )

    def argv(self) -> list[str]:
        """The options a user passes to aim the harness at this deployment."""
        uris = [
            f"{NAMES['udp']}=turn:{self.gateway}:{self.ports['udp']}?transport=udp",
            f"{NAMES['tcp']}=turn:{self.gateway}:{self.ports['tcp']}?transport=tcp",
            f"{NAMES['tls']}=turns:{self.gateway}:{self.ports['tls']}?transport=tcp",
        ]
        return [
            "--target",
            "external",
            *(a for uri in uris for a in ("--turn-uri", uri)),
            "--turn-user",
            USERNAME,
            "--turn-password",
            PASSWORD,
            "--turn-ca",
            str(self.ca),
            "--peer",
            f"{self.peer[0]}:{self.peer[1]}",
            "--asymmetric-peer",
            f"{self.asymmetric[0]}:{self.asymmetric[1]}",
            "--outside-peer",
            "127.0.0.1:9",
            "--prometheus-url",
            f"http://127.0.0.1:{self.prom_port}",
            "--prometheus-selector",
            f'job="{JOB}"',
        ]

    def stop(self) -> None:
        for child in reversed(self._procs):
            proc.stop(child, signal.SIGINT if child is not self._procs[-1] else signal.SIGTERM)
        self._procs.clear()


@contextlib.contextmanager
def deployment(prometheus: str, keep: bool = False) -> Iterator[Deployment]:
    workdir = Path(tempfile.mkdtemp(prefix="stunner-ext-"))
    try:
        with leased_addresses(2) as (gateway, peer_host):
            dep = Deployment(workdir, gateway, peer_host)
            try:
                dep.start(prometheus)
                yield dep
            finally:
                dep.stop()
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


ROOT = Path(__file__).resolve().parent.parent
# The scenarios that run against any deployment (the others reconfigure a local gateway).
SCENARIOS = ("e2e/test_traffic.py", "e2e/test_shapes.py", "e2e/test_denied_peer.py")
NESTED_TIMEOUT = 240.0


class BackgroundRun:
    """The deployment and `pytest --target external` against it, in a thread, so that the
    nested run's waits overlap the main run's. `result()` joins it."""

    def __init__(self, prometheus: str, reportdir: Path, keep: bool) -> None:
        self.prometheus = prometheus
        self.reportdir = reportdir
        self.keep = keep
        self.returncode: int | None = None
        self.error = ""
        self.argv: list[str] = []
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="external-run", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with deployment(self.prometheus, self.keep) as dep:
                self.argv = dep.argv()
                cmd = [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-m",
                    "e2e",
                    *SCENARIOS,
                    *self.argv,
                ]
                self.reportdir.mkdir(parents=True, exist_ok=True)
                env = {**os.environ, "STUNNER_E2E_REPORT_DIR": str(self.reportdir)}
                with open(self.reportdir / "pytest.log", "wb") as log:
                    if self._stopping:
                        return
                    self._child = subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                    self.returncode = self._child.wait(timeout=NESTED_TIMEOUT)
        except Exception as exc:  # reported by the test that joins the run
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self, timeout: float = NESTED_TIMEOUT) -> tuple[int | None, str]:
        self._thread.join(timeout)
        return self.returncode, self.error

    def stop(self) -> None:
        """End the nested run if it is still going (the main run was interrupted)."""
        self._stopping = True
        proc.stop(self._child, signal.SIGINT, 10.0)
        self._thread.join(30)
