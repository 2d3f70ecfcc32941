"""Kubernetes path without Kubernetes: `stunnerctl render` turns the spec's GatewayConfig (plus
a Gateway, a UDPRoute and the backend Service) into the file a running stunnerd watches; after
the spec's metricsEndpoint merge patch, the re-rendered file turns metrics on live.

The patched URL names this gateway's loopback address instead of the spec's 0.0.0.0, so runs
and gateways on one machine do not fight over port 8080.
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.checks import Checker, Recorder
from e2e.clients import Endpoint
from e2e.live_metrics import enable_metrics_live
from e2e.targets.base import Target
from stunner import constants
from testkit.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

NAMESPACE = "stunner"
GATEWAY, LISTENER, ROUTE, SERVICE = "udp-gateway", "udp-listener", "media-plane", "media-server"


def _stunnerctl_missing() -> str | None:
    try:
        importlib.import_module("stunner.cli.stunnerctl")
    except Exception as exc:  # any import failure means "not ready yet"
        return f"stunnerctl is not importable yet: {exc}"
    return None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type=merge` applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _objects(health: str, port: int, backend_ip: str) -> dict[str, dict[str, Any]]:
    meta = {"namespace": NAMESPACE}
    return {
        "gatewayconfig": {
            "apiVersion": "stunner.l7mp.io/v1alpha1",
            "kind": "GatewayConfig",
            "metadata": {"name": constants.GATEWAYCONFIG_NAME, **meta},
            # The spec's GatewayConfig; the health port is per run (the default 8086 is shared).
            "spec": {
                "userName": "my-user",
                "password": "my-password",
                "healthCheckEndpoint": health,
            },
        },
        "gateway": {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, **meta},
            "spec": {
                "gatewayClassName": "stunner-gatewayclass",
                "listeners": [{"name": LISTENER, "protocol": "TURN-UDP", "port": port}],
            },
        },
        "udproute": {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "UDPRoute",
            "metadata": {"name": ROUTE, **meta},
            "spec": {
                "parentRefs": [{"name": GATEWAY}],
                "rules": [{"backendRefs": [{"name": SERVICE}]}],
            },
        },
        "service": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, **meta},
            "spec": {"clusterIP": backend_ip, "ports": [{"port": 9, "protocol": "UDP"}]},
        },
    }


def render(workdir: Path, objects: dict[str, dict[str, Any]]) -> str:
    args = [sys.executable, "-m", "stunner.cli.stunnerctl", "render"]
    for option, obj in objects.items():
        path = workdir / f"{option}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        args += [f"--{option}", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"stunnerctl render failed: {proc.stderr.strip()}"
    return proc.stdout


async def test_stunnerctl_output_turns_metrics_on_live(
    local: Target, recorder: Recorder, tmp_path: Path
) -> None:
    reason = _stunnerctl_missing()
    if reason:
        pytest.skip(reason)
    lab = local.lab
    assert lab is not None
    addr = lab.address["d"]
    port = free_port(addr)
    gateway = lab.gateways["d"]
    objects = _objects(f"http://{addr}:{gateway.health_port}", port, lab.backend.address[0])
    before = render(tmp_path, objects)
    assert not yaml.safe_load(before)["admin"].get("metrics_endpoint"), before
    patch = {"spec": {"metricsEndpoint": lab.metrics_url("d")}}
    endpoint = Endpoint(f"{NAMESPACE}/{GATEWAY}/{LISTENER}", "udp", addr, port)
    check = Checker(lab.scope("d"), "stunnerctl render, then the metricsEndpoint patch", recorder)
    with lab.running("d", before, env={"STUNNER_ADDR": addr}) as running:

        def enable() -> None:
            objects["gatewayconfig"] = merge_patch(objects["gatewayconfig"], patch)
            running.write(render(tmp_path, objects))

        await enable_metrics_live(
            check, running, endpoint, ("my-user", "my-password"), local.peer, enable
        )
    check.assert_all()
