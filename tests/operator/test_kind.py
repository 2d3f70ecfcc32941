"""The kind target on paper (kind cannot run here): the cluster config's port mappings, the
manifests e2e/kind_setup.py applies, the order and exact form of its commands, the image
build files and the CI workflow."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from e2e import kind_setup as ks
from stunner import constants as c
from stunner.operator.render import RenderInput, render

from . import objects as o
from .test_render import doc

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def kind_config() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "kind" / "cluster.yaml").read_text()))


def test_kind_config_maps_the_turn_ports() -> None:
    cfg = kind_config()
    assert (cfg["kind"], cfg["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = cfg["nodes"]
    assert node["role"] == "control-plane"
    got = {(m["hostPort"], m["protocol"], m["containerPort"]) for m in node["extraPortMappings"]}
    assert got == {
        (3478, "UDP", 30478),
        (3478, "TCP", 30478),
        (3479, "TCP", 30479),
    }  # Prometheus and Grafana: kubectl port-forward, as the README says
    assert {m["listenAddress"] for m in node["extraPortMappings"]} == {"127.0.0.1"}
    assert all(30000 <= m["containerPort"] <= 32767 for m in node["extraPortMappings"])
    (patch,) = [yaml.safe_load(p) for p in node["kubeadmConfigPatches"]]
    assert patch == {"kind": "KubeletConfiguration", "syncFrequency": "10s"}


def test_kind_setup_ports_agree_with_the_kind_config() -> None:
    (node,) = kind_config()["nodes"]
    mapped = {(m["containerPort"], m["protocol"]): m["hostPort"] for m in node["extraPortMappings"]}
    for _, protocol, port, node_port in ks.LISTENERS:
        assert mapped[(node_port, "UDP" if protocol == "UDP" else "TCP")] == port
    assert ks.PROMETHEUS_URL == "http://127.0.0.1:9090"
    assert ks.GRAFANA_URL == "http://127.0.0.1:3000"
    assert ks.PROMETHEUS_PORT not in mapped.values()  # free for the port-forward


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [m for m in ks.manifests() if m["kind"] == kind]


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_builtin_manifests_validate(kind: str) -> None:
    for obj in by_kind(kind):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_turn_nodeport_service() -> None:
    (svc,) = [s for s in by_kind("Service") if s["metadata"]["name"] == ks.NODEPORT_SERVICE]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == {"app": c.POD_APP_LABEL}
    ports = {
        (p["protocol"], p["port"], p["targetPort"], p["nodePort"]) for p in svc["spec"]["ports"]
    }
    assert ports == {
        ("UDP", 3478, 3478, 30478),
        ("TCP", 3478, 3478, 30478),
        ("TCP", 3479, 3479, 30479),
    }


def test_gateway_and_route_render_to_the_advertised_listeners() -> None:
    """What the operator will make of kind_setup's objects, and that turn_uris() names it."""
    (gw,) = by_kind("Gateway")
    (route,) = by_kind("UDPRoute")
    (echo,) = [s for s in by_kind("Service") if s["metadata"]["name"] == ks.ECHO]
    echo = {**echo, "spec": {**echo["spec"], "clusterIP": "10.96.7.7"}}
    gc = o.gatewayconfig(metricsEndpoint=ks.METRICS_ENDPOINT)
    result = render(
        RenderInput(gc, gateways=[gw], routes=[route], services=[echo], secrets=[o.tls_secret()])
    )
    assert result.config is not None
    listeners = [
        (x["name"], x["protocol"], x["port"], x["routes"]) for x in doc(result)["listeners"]
    ]
    assert listeners == [
        ("stunner/stunner-gateway/udp-listener", "UDP", 3478, ["stunner/echo"]),
        ("stunner/stunner-gateway/tcp-listener", "TCP", 3478, ["stunner/echo"]),
        ("stunner/stunner-gateway/tls-listener", "TLS", 3479, ["stunner/echo"]),
    ]
    assert doc(result)["clusters"][0]["endpoints"] == ["10.96.7.7"]
    assert doc(result)["admin"]["metrics_endpoint"] == "http://0.0.0.0:8080/metrics"
    assert ks.turn_uris() == [
        "stunner/stunner-gateway/udp-listener=turn:127.0.0.1:3478?transport=udp",
        "stunner/stunner-gateway/tcp-listener=turn:127.0.0.1:3478?transport=tcp",
        "stunner/stunner-gateway/tls-listener=turns:127.0.0.1:3479?transport=tcp",
    ]
    # Gateway API requires a port on Service backendRefs.
    assert all("port" in ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"])


def test_patch_is_the_specs_command() -> None:
    spec_cmd = (
        "kubectl -n stunner patch gatewayconfigs.stunner.l7mp.io stunner-gatewayconfig "
        """--patch '{"spec": {"metricsEndpoint": "http://0.0.0.0:8080/metrics" }}' --type=merge"""
    )
    assert ["kubectl", *ks.PATCH_METRICS] == shlex.split(spec_cmd)
    assert json.loads(ks.PATCH_METRICS[6]) == {"spec": {"metricsEndpoint": ks.METRICS_ENDPOINT}}


class FakeCluster:
    """Records kubectl calls and answers the few reads setup() makes."""

    name = "stunner-e2e"
    kubeconfig_path = Path("/tmp/kubeconfig")

    def __init__(self) -> None:
        self.log: list[str] = []

    def kubectl(self, *args: str, **kwargs: Any) -> str:
        self.log.append("kubectl " + " ".join(args))
        if "configmap" in args:
            return "admin:\n  metrics_endpoint: http://0.0.0.0:8080/metrics\n"
        if "gatewayconfigs.stunner.l7mp.io" in args and "get" in args:
            return json.dumps({"spec": {"userName": "user-1", "password": "pass-1"}})
        if args[-1] == "jsonpath={.spec.clusterIP}":
            return "10.96.7.7"
        if args[:2] == ("get", "gatewayclasses"):
            return "gatewayclass.gateway.networking.k8s.io/other\n"
        return ""

    def delete(self) -> None:
        self.log.append("delete")


def test_setup_runs_the_readme_steps_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = FakeCluster()
    envs: list[str] = []

    def runner(args: list[str], **kwargs: Any) -> str:
        cluster.log.append(shlex.join(args))
        if args[0] != "openssl":
            envs.append(kwargs["env"]["KUBECONFIG"])
            assert kwargs["cwd"] == ks.ROOT
        return ""

    def spawner(args: list[str], env: dict[str, str]) -> Any:
        cluster.log.append(shlex.join(args) + " &")
        return lambda: cluster.log.append("stopped " + shlex.join(args))

    monkeypatch.setattr(ks, "_prometheus_ready", lambda: True)
    monkeypatch.setattr(ks, "_grafana_ready", lambda: True)
    with contextlib.ExitStack() as stack:
        info = ks.setup(cluster, tmp_path, stack, runner=runner, spawner=spawner)
        assert not [line for line in cluster.log if line.startswith("stopped")]
    # The README's commands, verbatim, in order, with the e2e-only steps between them.
    documented = ks.documented_steps(cluster.name)
    assert [line for line in cluster.log if line in documented] == documented
    assert set(envs) == {str(cluster.kubeconfig_path)}
    expected_in_order = [
        "docker build -t stunner:0.1.0 .",
        "kind load docker-image stunner:0.1.0 --name stunner-e2e",
        f"kubectl apply --server-side -f {ks.GATEWAY_API_URL}",
        "helm repo add prometheus-community https://prometheus-community.github.io/helm-charts",
        "helm dependency build charts/stunner-prometheus",
        "helm install stunner charts/stunner --create-namespace --namespace=stunner "
        "--set stunner.deployment.monitoring.enabled=true",
        "kubectl -n stunner create secret tls stunner-tls",
        f"kubectl apply -f {tmp_path / 'gateway.json'}",
        "kubectl " + shlex.join(ks.PATCH_METRICS),
        "helm install prometheus charts/stunner-prometheus --wait --timeout 10m",
        "kubectl -n monitoring port-forward svc/prometheus 9090:9090 &",
        "kubectl -n monitoring port-forward svc/grafana 3000:80 &",
        "kubectl -n stunner wait --for=condition=Programmed gateway/stunner-gateway",
        "kubectl -n stunner wait --for=condition=Ready pod -l app=stunner",
        "stopped kubectl -n monitoring port-forward svc/grafana 3000:80",
    ]
    positions = []
    for step in expected_in_order:
        hits = [i for i, line in enumerate(cluster.log) if line.startswith(step)]
        assert hits, f"missing step: {step}\n" + "\n".join(cluster.log)
        positions.append(hits[0])
    assert positions == sorted(positions)
    assert "v1.2.1/experimental-install.yaml" in ks.GATEWAY_API_URL
    applied = json.loads((tmp_path / "gateway.json").read_text())["items"]
    assert applied[0]["kind"] == "GatewayClass"  # not there yet: created
    assert info == {
        "turn_uris": ks.turn_uris(),
        "username": "user-1",
        "password": "pass-1",
        "peer": "10.96.7.7:9001",
        "prometheus_url": "http://127.0.0.1:9090",
        "selector": 'namespace="stunner"',
    }


def test_existing_gatewayclass_is_not_applied_again(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.kubectl = lambda *a, **k: (  # type: ignore[method-assign]
        "gatewayclass.gateway.networking.k8s.io/stunner-gatewayclass\n"
    )
    ks.apply_gateway(cluster, tmp_path)
    applied = json.loads((tmp_path / "gateway.json").read_text())["items"]
    assert "GatewayClass" not in [x["kind"] for x in applied]


def test_poll_gives_up_at_the_deadline() -> None:
    with pytest.raises(TimeoutError, match="gave up waiting for never"):
        ks.poll("never", lambda: False, timeout=0.05, interval=0.01)


@pytest.mark.parametrize(
    ("missing", "docker_ok", "reason"),
    [
        ("helm", True, "helm not found on PATH"),
        ("kind", True, "kind not found on PATH"),
        (None, False, "docker info failed: docker info ... failed (1): Cannot connect"),
        (None, True, None),
    ],
)
def test_kind_unavailable_reason(
    monkeypatch: pytest.MonkeyPatch, missing: str | None, docker_ok: bool, reason: str | None
) -> None:
    monkeypatch.setattr(
        ks.shutil, "which", lambda tool: None if tool == missing else f"/bin/{tool}"
    )

    def fake_run(args: list[str], **kwargs: Any) -> str:
        if not docker_ok:
            raise RuntimeError(f"{' '.join(args[:2])} ... failed (1): Cannot connect")
        return "27.0.1"

    monkeypatch.setattr(ks, "run", fake_run)
    assert ks.kind_unavailable_reason() == reason


def test_kind_unavailable_here_is_one_line() -> None:
    """This machine has no kind; the harness skips with this line."""
    reason = ks.kind_unavailable_reason()
    assert reason is not None and "\n" not in reason


def test_run_reports_the_failing_command() -> None:
    with pytest.raises(
        RuntimeError, match=r"^sh -c echo boom >&2; exit 3 \.\.\. failed \(3\): boom$"
    ):
        ks.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=10)
    assert ks.run(["sh", "-c", "echo hi"], timeout=10) == "hi\n"
    with pytest.raises(subprocess.TimeoutExpired):
        ks.run(["sleep", "5"], timeout=0.1)


# --------------------------------------------------------------------------------------------
# Image and CI


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    return [(ln.split()[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile() -> None:
    steps = dockerfile()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert len(froms) == 2 and all("${PYTHON_IMAGE}" in f for f in froms)
    (arg,) = [a for op, a in steps if op == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim-\w+", arg)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    runs = " ".join(a for op, a in steps if op == "RUN")
    assert 'pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"' in runs
    final_runs = " ".join(a for op, a in final if op == "RUN")
    assert '--no-index --find-links=/wheels "stunner[operator]"' in final_runs
    assert not [a for op, a in final if op == "COPY"]  # nothing but the wheels' install
    (user,) = [a for op, a in final if op == "USER"]
    assert user.split(":")[0] == "65532"
    (cmd,) = [a for op, a in final if op == "CMD"]
    assert json.loads(cmd) == ["stunnerd", "-c", c.CONFIG_PATH, "-w"]
    copied = " ".join(a for op, a in steps if op == "COPY")
    assert "tests" not in copied and "e2e" not in copied


def test_dockerignore_is_an_allow_list() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!stunner/"} <= set(lines)


def workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text()))


def test_workflow_runs_the_kind_target() -> None:
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # PyYAML reads the bare key `on` as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu-")
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    assert any(u.startswith("azure/setup-helm@") for u in uses)
    kind_step = next(s for s in steps if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind_step["with"]["install_only"] is True and "kubectl_version" in kind_step["with"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    runs = [s.get("run", "") for s in steps]
    (e2e,) = [r for r in runs if "nox -s e2e" in r]
    assert e2e.startswith("nox -s e2e -- --target kind")
    assert any("skipped == tests" in r for r in runs)  # an all-skipped run fails
    assert job["timeout-minutes"] <= 90


def test_diagnostics_survive_failing_commands() -> None:
    cluster = FakeCluster()

    def flaky(*args: str, **kwargs: Any) -> str:
        if "logs" in args:
            raise subprocess.CalledProcessError(1, ["kubectl", *args])
        return "ok-output"

    cluster.kubectl = flaky  # type: ignore[method-assign]
    text = ks.diagnostics(cluster)
    assert text.count("ok-output") == 3
    assert text.count("failed: Command") == 2
