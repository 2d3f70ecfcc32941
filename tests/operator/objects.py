"""Builders for the Kubernetes objects the operator tests feed in (decoded JSON, as the API
serves it)."""

from __future__ import annotations

import base64
from typing import Any

from stunner import constants as c

GW_API = "gateway.networking.k8s.io/v1"
ROUTE_API = "gateway.networking.k8s.io/v1alpha2"
CLASS_NAME = "stunner-gatewayclass"

# Not a real certificate: render and stunnerd's config loader only check base64 and PEM armour.
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEfake\n-----END PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def gatewayconfig(
    namespace: str = "stunner",
    name: str = c.GATEWAYCONFIG_NAME,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """The spec's example GatewayConfig unless `spec` says otherwise."""
    body = {"userName": "my-user", "password": "my-password", **spec}
    return {
        "apiVersion": "stunner.l7mp.io/v1alpha1",
        "kind": "GatewayConfig",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "generation": generation,
        },
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def gatewayclass(
    name: str = CLASS_NAME,
    params: tuple[str, str] | None = ("stunner", c.GATEWAYCONFIG_NAME),
    controller: str = c.CONTROLLER_NAME,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"controllerName": controller}
    if params is not None:
        spec["parametersRef"] = {
            "group": "stunner.l7mp.io",
            "kind": "GatewayConfig",
            "namespace": params[0],
            "name": params[1],
        }
    return {
        "apiVersion": GW_API,
        "kind": "GatewayClass",
        "metadata": {"name": name, "generation": 1},
        "spec": spec,
    }


def listener(name: str, protocol: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "protocol": protocol, "port": port, **extra}


def gateway(
    name: str = "udp-gateway",
    namespace: str = "stunner",
    listeners: list[dict[str, Any]] | None = None,
    class_name: str = CLASS_NAME,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": GW_API,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": listeners
            if listeners is not None
            else [listener("udp-listener", "UDP", 3478)],
            **spec,
        },
    }


def udproute(
    name: str = "media-plane",
    namespace: str = "stunner",
    parents: list[dict[str, Any]] | None = None,
    backends: list[dict[str, Any]] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": ROUTE_API,
        "kind": "UDPRoute",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {
            "parentRefs": parents if parents is not None else [{"name": "udp-gateway"}],
            "rules": [
                {
                    "backendRefs": backends
                    if backends is not None
                    else [{"name": "media-server", "namespace": "default", "port": 9001}]
                }
            ],
        },
    }


def service(
    name: str = "media-server",
    namespace: str = "default",
    cluster_ip: str = "10.96.0.10",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"port": 9001, "protocol": "UDP"}],
            **spec,
        },
    }


def endpoints(
    name: str = "media-server",
    namespace: str = "default",
    ips: tuple[str, ...] = ("10.244.1.7", "10.244.0.5"),
    not_ready: tuple[str, ...] = (),
) -> dict[str, Any]:
    subset: dict[str, Any] = {
        "addresses": [{"ip": ip} for ip in ips],
        "ports": [{"port": 9001, "protocol": "UDP"}],
    }
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [subset],
    }


def tls_secret(name: str = "stunner-tls", namespace: str = "stunner") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": b64(CERT_PEM), "tls.key": b64(KEY_PEM)},
    }


def auth_secret(
    name: str = "stunner-auth", namespace: str = "stunner", **data: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: b64(v) for k, v in data.items()},
    }
