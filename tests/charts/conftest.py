"""Fixtures: the helm binary, and stunner-prometheus with a local stand-in for its dependency.

kube-prometheus-stack is a pinned remote dependency, and nothing remote can be fetched here. So
these fixtures build a STAND-IN chart with the same name and version, publish it in a chart
repository served on 127.0.0.1, and point the repository name that Chart.yaml's URL maps to at
that index. `helm dependency build` then runs unchanged against the committed Chart.yaml and
Chart.lock in a temporary copy of the chart. The stand-in (standin.py) has kube-prometheus-stack
88.x's install-time structure (CRDs, the admission webhook's hooks) and a marker ConfigMap, not
Prometheus or Grafana: what kube-prometheus-stack itself renders is not tested here.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.helm import find_helm
from tests.charts.manifests import PROMETHEUS
from tests.charts.standin import STANDIN_MARKER, write_standin

__all__ = ["STANDIN_MARKER", "Helm"]


def _dependency() -> dict[str, Any]:
    (dependency,) = yaml.safe_load((PROMETHEUS / "Chart.yaml").read_text())["dependencies"]
    return dict(dependency)


class Helm:
    """The helm binary with its own config, cache and data directories."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.home = home

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and done.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    if binary is None:
        pytest.skip("no helm v3 binary: run `python tests/charts/helm.py fetch` once")
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def stack_repo(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A chart repository on 127.0.0.1 with the stand-in, registered under the real URL."""
    dependency = _dependency()
    work = tmp_path_factory.mktemp("standin")
    repo = work / "repo"
    repo.mkdir()
    source = write_standin(work / "src", dependency["name"], dependency["version"])
    helm.run("package", str(source), "--destination", str(repo))
    handler = functools.partial(_QuietHandler, directory=str(repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        helm.run("repo", "index", str(repo), "--url", url)
        name = "stand-in"
        repositories = {
            "apiVersion": "",
            "generated": "0001-01-01T00:00:00Z",
            "repositories": [{"name": name, "url": dependency["repository"]}],
        }
        config = helm.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "repositories.yaml").write_text(yaml.safe_dump(repositories))
        cache = helm.home / "cache" / "repository"
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / "index.yaml", cache / f"{name}-index.yaml")
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def built_prometheus_chart(
    helm: Helm, stack_repo: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of stunner-prometheus after `helm dependency build` against the stand-in."""
    copy = tmp_path_factory.mktemp("chart") / PROMETHEUS.name
    shutil.copytree(PROMETHEUS, copy, ignore=shutil.ignore_patterns("charts"))
    helm.run("dependency", "build", "--skip-refresh", str(copy))
    return copy
