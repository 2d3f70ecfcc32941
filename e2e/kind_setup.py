"""The kind target: STUNner installed in a kind cluster with the README's Kubernetes quick start.

The harness (e2e/targets/kind.py) calls `kind_unavailable_reason()` and then `kind_target()`.
`setup()` runs the quick start's commands exactly as `documented_steps()` prints them (the
README's block is checked against it), with the kubeconfig in $KUBECONFIG, and between them the
steps only the harness needs (marked e2e-only):

1. `docker build -t stunner:0.1.0 .` and `kind load docker-image stunner:0.1.0`;
2. e2e-only: Gateway API CRDs, standard and experimental channel, pinned (`install_gateway_api`);
3. `helm repo add prometheus-community https://prometheus-community.github.io/helm-charts`
   (the dependency's repository) and `helm dependency build charts/stunner-prometheus`;
4. ``helm install stunner charts/stunner --create-namespace --namespace=stunner
   --set stunner.deployment.monitoring.enabled=true``;
5. e2e-only: a GatewayClass, a Gateway with UDP/TCP/TLS listeners, a UDPRoute to a UDP echo
   backend and a NodePort Service that kind/cluster.yaml maps to 127.0.0.1 (`apply_gateway`);
6. the spec's ``kubectl -n stunner patch gatewayconfigs.stunner.l7mp.io ...``;
7. ``helm install prometheus charts/stunner-prometheus --wait --timeout 10m``;
8. ``kubectl -n monitoring port-forward svc/prometheus 9090:9090`` and ``svc/grafana 3000:80``,
   in the background until the run ends;
9. e2e-only: wait until the config carries the metrics endpoint, stunnerd is ready, Prometheus
   answers on 127.0.0.1:9090 and Grafana on 127.0.0.1:3000.

The steps are plain functions over a cluster object with pytest-kind's `KindCluster` interface
(`name`, `kubeconfig_path`, `kubectl(*args, **kw)`, `delete()`), so they work with pytest-kind's
fixture or with `CliCluster`, which drives the `kind` binary on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from stunner import __version__
from stunner import constants as c

ROOT = Path(__file__).resolve().parents[1]
KIND_CONFIG = ROOT / "kind" / "cluster.yaml"
CLUSTER_NAME = "stunner-e2e"
IMAGE = f"stunner:{__version__}"
GATEWAY_API_VERSION = "v1.2.1"
# experimental-install.yaml holds the standard channel (GatewayClass, Gateway) and the
# experimental one (UDPRoute).
GATEWAY_API_URL = (
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/"
    f"{GATEWAY_API_VERSION}/experimental-install.yaml"
)
NAMESPACE = "stunner"
GATEWAY_CLASS = "stunner-gatewayclass"
GATEWAY = "stunner-gateway"
ROUTE = "echo"
ECHO = "udp-echo"
ECHO_PORT = 9001
TLS_SECRET = "stunner-tls"
NODEPORT_SERVICE = "stunner-turn"
HOST = "127.0.0.1"
# listener name, Gateway protocol, TURN port (in the pod and on the host), NodePort
LISTENERS: tuple[tuple[str, str, int, int], ...] = (
    ("udp-listener", "UDP", 3478, 30478),
    ("tcp-listener", "TCP", 3478, 30478),
    ("tls-listener", "TLS", 3479, 30479),
)
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_PORT = 9090
PROMETHEUS_URL = f"http://{HOST}:{PROMETHEUS_PORT}"
GRAFANA_PORT = 3000
GRAFANA_URL = f"http://{HOST}:{GRAFANA_PORT}"
# Exactly the spec's command (MONITORING.md, "Enable the STUNner metrics endpoint").
METRICS_ENDPOINT = "http://0.0.0.0:8080/metrics"
PATCH_METRICS = [
    "-n",
    NAMESPACE,
    "patch",
    "gatewayconfigs.stunner.l7mp.io",
    c.GATEWAYCONFIG_NAME,
    "--patch",
    '{"spec": {"metricsEndpoint": "http://0.0.0.0:8080/metrics" }}',
    "--type=merge",
]
# The README's Kubernetes quick start after `kind create cluster`, command by command.
DOCKER_BUILD = ["docker", "build", "-t", IMAGE, "."]
# `helm dependency build` resolves the pinned kube-prometheus-stack only through a repository
# added under its URL (Chart.yaml's `repository`).
DEPENDENCY_REPO = "https://prometheus-community.github.io/helm-charts"
REPO_ADD = ["helm", "repo", "add", "prometheus-community", DEPENDENCY_REPO]
DEPENDENCY_BUILD = ["helm", "dependency", "build", "charts/stunner-prometheus"]
INSTALL_STUNNER = [
    "helm",
    "install",
    "stunner",
    "charts/stunner",
    "--create-namespace",
    "--namespace=stunner",
    "--set",
    "stunner.deployment.monitoring.enabled=true",
]
# The spec's command, plus --wait: the Prometheus Operator must be up before its Prometheus.
INSTALL_PROMETHEUS = [
    "helm",
    "install",
    "prometheus",
    "charts/stunner-prometheus",
    "--wait",
    "--timeout",
    "10m",
]
PORT_FORWARDS = (
    ["kubectl", "-n", PROMETHEUS_NAMESPACE, "port-forward", "svc/prometheus", "9090:9090"],
    ["kubectl", "-n", PROMETHEUS_NAMESPACE, "port-forward", "svc/grafana", "3000:80"],
)
KEEP_ENV = "STUNNER_E2E_KEEP_KIND"
DIAGNOSTICS = ROOT / "e2e-report" / "kind-diagnostics.txt"


class Cluster(Protocol):
    """What the steps need from pytest-kind's KindCluster."""

    name: str
    kubeconfig_path: Path

    def kubectl(self, *args: str, **kwargs: Any) -> str: ...

    def delete(self) -> None: ...


Runner = Callable[..., str]
Spawner = Callable[[list[str], dict[str, str]], Callable[[], None]]  # start; returns a stopper


def run(args: Sequence[str], timeout: float = 600, **kwargs: Any) -> str:
    """Run a command, return its stdout; on failure raise with the tail of its stderr."""
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(args[:3])} ... failed ({done.returncode}): {tail}")
    return str(done.stdout)


def kind_unavailable_reason() -> str | None:
    """Why the kind target cannot run here, in one line; None if it can."""
    for tool in ("docker", "kind", "kubectl", "helm", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    try:
        run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        return f"docker info failed: {exc}"
    return None


class CliCluster:
    """pytest-kind's KindCluster interface over the kind and kubectl binaries on PATH."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.kubeconfig_path = workdir / "kubeconfig"

    def create(self, config_file: Path) -> None:
        clusters = run(["kind", "get", "clusters"], timeout=60).split()
        if self.name not in clusters:
            create = ["kind", "create", "cluster", f"--name={self.name}"]
            options = [f"--config={config_file}", f"--kubeconfig={self.kubeconfig_path}"]
            run([*create, *options, "--wait=120s"], timeout=600)
        else:
            config = run(["kind", "get", "kubeconfig", f"--name={self.name}"], timeout=60)
            self.kubeconfig_path.write_text(config)

    def kubectl(self, *args: str, **kwargs: Any) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig_path)}
        return run(["kubectl", *args], env=env, **kwargs)

    def delete(self) -> None:
        run(["kind", "delete", "cluster", f"--name={self.name}"], timeout=300)


def create_cluster(name: str, workdir: Path) -> Cluster:
    """A fresh kind cluster from kind/cluster.yaml: pytest-kind's if installed, else
    `CliCluster`. A leftover cluster of the same name (say, kept with $STUNNER_E2E_KEEP_KIND)
    is deleted first: the helm installs below expect an empty cluster."""
    if name in run(["kind", "get", "clusters"], timeout=60).split():
        run(["kind", "delete", "cluster", f"--name={name}"], timeout=300)
    try:
        from pytest_kind import KindCluster  # type: ignore[import-not-found]
    except ImportError:
        cli = CliCluster(name, workdir)
        cli.create(KIND_CONFIG)
        return cli
    tools = {"kind_path": shutil.which("kind"), "kubectl_path": shutil.which("kubectl")}
    cluster = KindCluster(name, **{k: Path(v) for k, v in tools.items() if v})
    cluster.create(config_file=KIND_CONFIG)
    return cluster  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Manifests (pure, checked offline by tests/operator/test_kind.py)


def manifests() -> list[dict[str, Any]]:
    """GatewayClass, Gateway, UDPRoute, the echo backend and the TURN NodePort Service."""
    labels = {"app": ECHO}
    echo_code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('0.0.0.0', {ECHO_PORT}))\n"
        "while True:\n"
        "    data, peer = s.recvfrom(65535)\n"
        "    s.sendto(data, peer)\n"
    )
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {
                "controllerName": c.CONTROLLER_NAME,
                "parametersRef": {
                    "group": "stunner.l7mp.io",
                    "kind": "GatewayConfig",
                    "name": c.GATEWAYCONFIG_NAME,
                    "namespace": NAMESPACE,
                },
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": name,
                        "protocol": protocol,
                        "port": port,
                        **(
                            {
                                "tls": {
                                    "mode": "Terminate",
                                    "certificateRefs": [{"name": TLS_SECRET}],
                                }
                            }
                            if protocol == "TLS"
                            else {}
                        ),
                    }
                    for name, protocol, port, _ in LISTENERS
                ],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "UDPRoute",
            "metadata": {"name": ROUTE, "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": GATEWAY}],
                "rules": [{"backendRefs": [{"name": ECHO, "port": ECHO_PORT}]}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": ECHO, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "echo",
                                "image": IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["python", "-u", "-c", echo_code],
                                "ports": [{"containerPort": ECHO_PORT, "protocol": "UDP"}],
                                "securityContext": {
                                    "runAsNonRoot": True,
                                    "allowPrivilegeEscalation": False,
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ECHO, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "echo", "port": ECHO_PORT, "protocol": "UDP"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NODEPORT_SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "NodePort",
                "selector": {"app": c.POD_APP_LABEL},
                "ports": [
                    {
                        "name": name,
                        "port": port,
                        "targetPort": port,
                        "nodePort": node_port,
                        "protocol": "UDP" if protocol == "UDP" else "TCP",
                    }
                    for name, protocol, port, node_port in LISTENERS
                ],
            },
        },
    ]


def turn_uris() -> list[str]:
    """NAME=URI per listener, NAME being the stunnerd listener name (the metrics' `name`)."""
    out = []
    for name, protocol, port, _ in LISTENERS:
        full = f"{NAMESPACE}/{GATEWAY}/{name}"
        scheme, transport = ("turns", "tcp") if protocol == "TLS" else ("turn", protocol.lower())
        out.append(f"{full}={scheme}:{HOST}:{port}?transport={transport}")
    return out


# --------------------------------------------------------------------------------------------
# Steps


def load_image_command(cluster_name: str | None) -> list[str]:
    name = ["--name", cluster_name] if cluster_name else []
    return ["kind", "load", "docker-image", IMAGE, *name]


def documented_steps(cluster_name: str | None = None) -> list[str]:
    """The README's Kubernetes quick start after `kind create cluster`, as shell lines."""
    commands = [
        DOCKER_BUILD,
        load_image_command(cluster_name),
        REPO_ADD,
        DEPENDENCY_BUILD,
        INSTALL_STUNNER,
        ["kubectl", *PATCH_METRICS],
        INSTALL_PROMETHEUS,
    ]
    return [shlex.join(c) for c in commands] + [f"{shlex.join(c)} &" for c in PORT_FORWARDS]


def kube_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)}


def spawn(args: list[str], env: dict[str, str]) -> Callable[[], None]:
    """Start a background command (a port-forward); the returned function stops it."""
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=quiet, stderr=quiet)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    return stop


def install_gateway_api(cluster: Cluster) -> None:
    # Server-side: the experimental CRDs are too large for client-side apply's annotation.
    cluster.kubectl("apply", "--server-side", "-f", GATEWAY_API_URL, timeout=180)
    crds = ["crd/gateways.gateway.networking.k8s.io", "crd/udproutes.gateway.networking.k8s.io"]
    cluster.kubectl("wait", "--for=condition=Established", *crds, "--timeout=120s", timeout=180)


def make_tls_secret(cluster: Cluster, workdir: Path, runner: Runner = run) -> None:
    """A throwaway self-signed certificate for the TLS listener (clients do not verify it)."""
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subject = ["-days", "1", "-subj", "/CN=stunner-e2e", "-addext", f"subjectAltName=IP:{HOST}"]
    out = ["-keyout", str(key), "-out", str(cert)]
    runner(["openssl", "req", "-x509", *newkey, *subject, *out], timeout=60)
    cluster.kubectl(
        "-n", NAMESPACE, "create", "secret", "tls", TLS_SECRET, f"--cert={cert}", f"--key={key}"
    )


def apply_gateway(cluster: Cluster, workdir: Path) -> None:
    objs = manifests()
    existing = cluster.kubectl("get", "gatewayclasses", "-o", "name")
    if f"gatewayclass.gateway.networking.k8s.io/{GATEWAY_CLASS}" in existing.split():
        objs = [o for o in objs if o["kind"] != "GatewayClass"]  # e.g. the chart made it
    path = workdir / "gateway.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    cluster.kubectl("apply", "-f", str(path), timeout=120)


def poll(what: str, check: Callable[[], bool], timeout: float, interval: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass  # not up yet (pytest-kind raises its own RuntimeError or CalledProcessError)
        if time.monotonic() > deadline:
            raise TimeoutError(f"kind: gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(interval)


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status) == 200


def _prometheus_ready() -> bool:
    return _answers(f"{PROMETHEUS_URL}/-/ready")


def _grafana_ready() -> bool:
    return _answers(f"{GRAFANA_URL}/api/health")


def wait_ready(cluster: Cluster) -> None:
    ns = ["-n", NAMESPACE]
    cluster.kubectl(
        *ns,
        "wait",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=300s",
        timeout=330,
    )
    cluster.kubectl(
        *ns,
        "wait",
        "--for=condition=Programmed",
        f"gateway/{GATEWAY}",
        "--timeout=180s",
        timeout=200,
    )
    jsonpath = "jsonpath={.data.stunnerd\\.conf}"

    def config_has_metrics() -> bool:
        text = cluster.kubectl(*ns, "get", "configmap", c.CONFIGMAP_NAME, "-o", jsonpath)
        return f"metrics_endpoint: {METRICS_ENDPOINT}" in text

    poll("the metrics endpoint in the stunnerd ConfigMap", config_has_metrics, timeout=180)
    selector = f"app={c.POD_APP_LABEL}"
    cluster.kubectl(
        *ns, "wait", "--for=condition=Ready", "pod", "-l", selector, "--timeout=300s", timeout=330
    )
    poll("Prometheus on 127.0.0.1:9090 (port-forward)", _prometheus_ready, timeout=300)
    poll("Grafana on 127.0.0.1:3000 (port-forward)", _grafana_ready, timeout=300)


def credentials(cluster: Cluster) -> tuple[str, str]:
    gc = json.loads(
        cluster.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "gatewayconfigs.stunner.l7mp.io",
            c.GATEWAYCONFIG_NAME,
            "-o",
            "json",
        )
    )
    spec: Mapping[str, Any] = gc.get("spec") or {}
    return str(spec.get("userName", "")), str(spec.get("password", ""))


def setup(
    cluster: Cluster,
    workdir: Path,
    stack: contextlib.ExitStack,
    runner: Runner = run,
    spawner: Spawner = spawn,
) -> dict[str, Any]:
    """Steps 1-9; returns what e2e/targets/kind.py passes on to the external target. The
    port-forwards run until `stack` closes."""
    env = kube_env(cluster)

    def step(command: list[str], timeout: float = 900) -> None:
        runner(command, timeout=timeout, cwd=ROOT, env=env)

    step(DOCKER_BUILD, timeout=1800)
    step(load_image_command(cluster.name), timeout=600)
    install_gateway_api(cluster)
    step(REPO_ADD, timeout=120)
    step(DEPENDENCY_BUILD)
    # No --wait: stunnerd becomes ready once the operator wrote a config (`wait_ready`).
    step(INSTALL_STUNNER)
    make_tls_secret(cluster, workdir, runner)
    apply_gateway(cluster, workdir)
    step(["kubectl", *PATCH_METRICS], timeout=60)
    step(INSTALL_PROMETHEUS)
    for forward in PORT_FORWARDS:
        stack.callback(spawner(forward, env))
    wait_ready(cluster)
    user, password = credentials(cluster)
    echo_ip = cluster.kubectl(
        "-n", NAMESPACE, "get", "service", ECHO, "-o", "jsonpath={.spec.clusterIP}"
    )
    return {
        "turn_uris": turn_uris(),
        "username": user,
        "password": password,
        "peer": f"{echo_ip.strip()}:{ECHO_PORT}",
        "prometheus_url": PROMETHEUS_URL,
        "selector": f'namespace="{NAMESPACE}"',
    }


def diagnostics(cluster: Cluster) -> str:
    """Cluster state for a failed setup: objects, events and the stunner pods' logs."""
    out = []
    commands = [
        ("get", "pods,svc,gateways,udproutes,gatewayconfigs,configmaps", "-A", "-o", "wide"),
        ("get", "events", "-A", "--sort-by=.lastTimestamp"),
        ("-n", NAMESPACE, "get", "gateway,udproute,gatewayconfig", "-o", "yaml"),
        ("-n", NAMESPACE, "logs", "-l", "app.kubernetes.io/component=operator", "--tail=200"),
        ("-n", NAMESPACE, "logs", "-l", f"app={c.POD_APP_LABEL}", "--tail=200"),
    ]
    for args in commands:
        try:
            out.append(f"$ kubectl {' '.join(args)}\n{cluster.kubectl(*args, timeout=60)}")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            out.append(f"$ kubectl {' '.join(args)}\nfailed: {exc}")
    return "\n".join(out)


@contextlib.contextmanager
def kind_target(name: str = CLUSTER_NAME) -> Iterator[dict[str, Any]]:
    """Create the cluster, set it up, yield the target's inputs; delete the cluster after
    (unless $STUNNER_E2E_KEEP_KIND is set). A failed setup leaves DIAGNOSTICS behind."""
    reason = kind_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"kind target unavailable: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="stunner-kind-"))
    cluster = create_cluster(name, workdir)
    try:
        with contextlib.ExitStack() as stack:
            try:
                info = setup(cluster, workdir, stack)
            except Exception:
                DIAGNOSTICS.parent.mkdir(parents=True, exist_ok=True)
                DIAGNOSTICS.write_text(diagnostics(cluster))
                sys.stderr.write(f"kind: setup failed, cluster state in {DIAGNOSTICS}\n")
                raise
            yield info
    finally:
        if not os.environ.get(KEEP_ENV):
            cluster.delete()
        shutil.rmtree(workdir, ignore_errors=True)
