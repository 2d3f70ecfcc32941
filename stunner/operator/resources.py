"""The Kubernetes resources the operator reads and writes, and helpers to name objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]
"""A Kubernetes object as decoded JSON (camelCase keys)."""

ObjKey = tuple[str, str]
"""(namespace, name)."""

STUNNER_GROUP = "stunner.l7mp.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" is the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path: a collection (all namespaces when `namespace` is None) or one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name is not None else base


GATEWAYCONFIGS = Resource(STUNNER_GROUP, "v1alpha1", "gatewayconfigs", "GatewayConfig")
GATEWAYCLASSES = Resource(GATEWAY_GROUP, "v1", "gatewayclasses", "GatewayClass", namespaced=False)
GATEWAYS = Resource(GATEWAY_GROUP, "v1", "gateways", "Gateway")
UDPROUTES = Resource(GATEWAY_GROUP, "v1alpha2", "udproutes", "UDPRoute")
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
PODS = Resource("", "v1", "pods", "Pod")


def meta(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def spec(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, Mapping) else {}


def key(obj: Obj) -> ObjKey:
    m = meta(obj)
    return (str(m.get("namespace") or ""), str(m.get("name") or ""))


def name_of(k: ObjKey) -> str:
    """ "ns/name", the form listener and cluster names use (cluster-scoped: just "name")."""
    return f"{k[0]}/{k[1]}" if k[0] else k[1]


def generation(obj: Obj) -> int | None:
    value = meta(obj).get("generation")
    return value if isinstance(value, int) else None
