"""A real Prometheus child scraping stunnerd every second, with storage in a temp dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from testkit.ports import free_port

from . import child
from .servers import http_status

JOB = "stunnerd"
READY_TIMEOUT = 60.0


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def prometheus_version() -> str:
    binary = prometheus_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split("version", 1)[-1].strip().split()[0] if first else "unknown"


def scrape_config(target: str, interval: str = "1s") -> dict[str, Any]:
    """One job scraping ``target`` (host:port) at /metrics every ``interval``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


class Prometheus:
    """``prometheus`` on 127.0.0.1 scraping one target; stopped by PID in ``close()``."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.workdir = workdir
        self.target = target
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus")
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(scrape_config(self.target)))  # JSON is YAML
        self.argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=warn",
        ]
        with open(self.workdir / "prometheus.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while http_status(f"{self.url}/-/ready", timeout=1) != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.2)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str, at: float | None = None) -> float:
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_up(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        while self.scalar(f'up{{job="{JOB}"}}') != 1.0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus never scraped {self.target}")
            time.sleep(0.25)

    def successful_scrapes(self, start: float, end: float) -> int:
        """Successful scrapes of the target between two Unix times."""
        seconds = max(round(end - start), 1)
        return int(self.scalar(f'sum_over_time(up{{job="{JOB}"}}[{seconds}s])', at=end))

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            child.stop(proc, timeout=15)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
