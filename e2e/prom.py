"""A real Prometheus as a child process (file_sd targets), and a small HTTP API client."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from e2e import proc
from e2e.netutil import ProcessExited, poll
from e2e.scrape_source import ScrapeSpec
from testkit.ports import free_port

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 5.0


class PromError(RuntimeError):
    """The Prometheus API answered with an error."""


Sample = tuple[dict[str, str], float]


@dataclass
class PromClient:
    """The few Prometheus HTTP API calls the checks need, with instant-query helpers."""

    base_url: str

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._http = requests.Session()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        resp = self._http.get(f"{self.base_url}{path}", params=params, timeout=HTTP_TIMEOUT)
        body = resp.json()
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('error', resp.text)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """Instant vector query: [(labels, value)]."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Range query: [(labels, [(t, v)])]."""
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step},
        )
        return [
            (r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]
        ]

    def target_metadata(self, match_target: str) -> list[dict[str, Any]]:
        """Per-target TYPE/HELP as scraped (`/api/v1/targets/metadata`)."""
        data: list[dict[str, Any]] = self._get(
            "/api/v1/targets/metadata", {"match_target": match_target}
        )
        return data

    def active_targets(self) -> list[dict[str, Any]]:
        """`/api/v1/targets` active targets (scrapeUrl, scrapeInterval, labels, health)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        targets: list[dict[str, Any]] = data["activeTargets"]
        return targets

    def ready(self) -> bool:
        return self._http.get(f"{self.base_url}/-/ready", timeout=HTTP_TIMEOUT).ok


@dataclass(frozen=True)
class ScrapeTarget:
    """One file_sd entry: `host:port` plus extra labels."""

    address: str
    labels: tuple[tuple[str, str], ...] = ()


class PrometheusServer:
    """Prometheus with its own TSDB under `workdir`, scraping file_sd targets per `spec`."""

    def __init__(self, binary: str, workdir: Path, spec: ScrapeSpec) -> None:
        self.binary = binary
        self.workdir = workdir
        self.spec = spec
        self.port = free_port("127.0.0.1", udp=False)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = PromClient(self.url)
        self.targets_file = workdir / "targets" / "stunner.json"
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        """The scrape config a prometheus-operator would derive from the PodMonitor."""
        return {
            "global": {"scrape_interval": self.spec.interval, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": self.spec.job,
                    "scrape_interval": self.spec.interval,
                    "scrape_timeout": self.spec.interval,
                    "metrics_path": self.spec.path,
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                }
            ],
        }

    def set_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Rewrite the file_sd file atomically; Prometheus notices through inotify."""
        groups = [{"targets": [t.address], "labels": dict(t.labels)} for t in targets]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=1))
        os.replace(tmp, self.targets_file)

    def start(self, targets: Iterable[ScrapeTarget] = (), *, timeout: float = 30.0) -> None:
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        self.set_targets(targets)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        log.info("starting %s", " ".join(argv))
        with open(self.log_path, "wb") as logf:
            self._proc = subprocess.Popen(
                argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            poll(self._ready_or_dead, bool, timeout=timeout, what="prometheus /-/ready")
        except BaseException:
            self.stop()
            raise

    def _ready_or_dead(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ProcessExited(
                f"prometheus exited with {self._proc.returncode}: {self.log_tail()}"
            )
        return self.client.ready()

    def log_tail(self) -> str:
        return proc.log_tail(self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        child, self._proc = self._proc, None
        proc.stop(child, signal.SIGTERM, timeout)
