"""The real ``stunner-operator`` process (kopf, the handlers, the kubernetes_asyncio client)
against `ApiServer`, a stand-in API server on 127.0.0.1: the spec's flow of create, then the
metricsEndpoint patch, plus a rejected spec and an Endpoints change, ending with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stunner import constants as c
from stunner.operator.reconcile import CONFIG_DIGEST_ANNOTATION
from testkit.ports import free_port
from testkit.wait import DeadlineExceeded, poll_async

from . import objects as o
from .apiserver import ApiServer
from .test_render import PATCHED_METRICS, expected_text

pytestmark = pytest.mark.timeout(60)
DEADLINE = 20.0


async def until(
    what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path
) -> Any:
    """Poll `check` until truthy; fail with the operator's log tail at the deadline."""
    try:
        return await poll_async(
            check, timeout=DEADLINE, what=what, interval=0.05, stop=lambda: proc.poll() is not None
        )
    except DeadlineExceeded:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"gave up waiting for {what} (operator rc={proc.poll()}):\n{tail}")


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    api = ApiServer()
    await api.start()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "stunner-0", "namespace": "stunner", "labels": {"app": "stunner"}},
    }
    for obj in (
        o.gatewayconfig(),
        o.gatewayclass(),
        o.gateway(),
        o.udproute(),
        o.service(),
        o.endpoints(),
        pod,
    ):
        await api.put(obj)
    try:
        yield api
    finally:
        await api.stop()


def configmap(api: ApiServer) -> str | None:
    cm = api.get("ConfigMap", "stunner", c.CONFIGMAP_NAME)
    return cm["data"][c.CONFIGMAP_KEY] if cm else None


def conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    items = ((obj or {}).get("status") or {}).get("conditions") or []
    return {x["type"]: f"{x['status']}/{x['reason']}" for x in items}


async def test_operator_process_end_to_end(server: ApiServer, tmp_path: Path) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}],
        "users": [{"name": "op", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "op"}}],
        "current-context": "fake",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(tmp_path / "kubeconfig"), POD_NAMESPACE="stunner")
    health = free_port(udp=False)
    log = tmp_path / "operator.log"
    cmd = [
        sys.executable,
        "-m",
        "stunner.operator.main",
        f"--liveness=http://127.0.0.1:{health}/healthz",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # 1. helm install: the GatewayConfig, a Gateway and a route exist -> the ConfigMap.
        text = await until("the ConfigMap", lambda: configmap(server), proc, log)
        assert text == expected_text()
        gc = lambda: server.get("GatewayConfig", "stunner", c.GATEWAYCONFIG_NAME)  # noqa: E731
        await until(
            "GatewayConfig Programmed",
            lambda: conditions(gc()).get("Programmed") == "True/Programmed",
            proc,
            log,
        )
        assert conditions(gc())["Accepted"] == "True/Accepted"
        gw = server.get("Gateway", "stunner", "udp-gateway")
        await until(
            "Gateway status",
            lambda: conditions(server.get("Gateway", "stunner", "udp-gateway")),
            proc,
            log,
        )
        route = lambda: server.get("UDPRoute", "stunner", "media-plane")  # noqa: E731
        await until(
            "UDPRoute parents", lambda: (route() or {}).get("status", {}).get("parents"), proc, log
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{health}/healthz") as resp,
        ):
            assert resp.status == 200

        # 2. kubectl patch ... metricsEndpoint (merge) -> admin.metrics_endpoint, pods nudged.
        await server.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS))
        want = expected_text(metrics_endpoint=PATCHED_METRICS)
        await until("the patched config", lambda: configmap(server) == want, proc, log)
        pod = lambda: server.get("Pod", "stunner", "stunner-0")  # noqa: E731
        await until(
            "the pod nudge",
            lambda: (
                CONFIG_DIGEST_ANNOTATION in ((pod() or {})["metadata"].get("annotations") or {})
            ),
            proc,
            log,
        )

        # 3. A bad spec is reported, the running config stays, the operator lives on.
        await server.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS, realm="Bad Realm"))
        await until(
            "Accepted=False",
            lambda: conditions(gc()).get("Accepted") == "False/InvalidParameters",
            proc,
            log,
        )
        assert configmap(server) == want
        assert proc.poll() is None

        # 4. Fixed again, and the backend's Endpoints change.
        await server.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS))
        await server.put(o.endpoints(ips=("10.244.9.9",)))
        await until(
            "the new endpoint", lambda: "- 10.244.9.9\n" in (configmap(server) or ""), proc, log
        )
        # The status patch follows the ConfigMap write: poll for it rather than race it.
        await until(
            "Accepted again",
            lambda: conditions(gc()).get("Accepted") == "True/Accepted",
            proc,
            log,
        )
        assert gw is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            rc = None
    assert rc == 0, log.read_text()[-3000:]
