"""A small stand-in Kubernetes API server (aiohttp, 127.0.0.1) good enough to run the real
``stunner-operator`` process against: discovery, list, watch streams, get, create, replace,
merge patches (object and status) and events. Objects live in memory; every change is also
a watch event, kept in a history so a watch from a resourceVersion replays what it missed."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .fake_api import merge_patch


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = [
    Kind("", "v1", "services", "Service"),
    Kind("", "v1", "endpoints", "Endpoints"),
    Kind("", "v1", "configmaps", "ConfigMap"),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "pods", "Pod"),
    Kind("", "v1", "events", "Event"),
    Kind("", "v1", "namespaces", "Namespace", namespaced=False),
    Kind("stunner.l7mp.io", "v1alpha1", "gatewayconfigs", "GatewayConfig", status=True),
    Kind("gateway.networking.k8s.io", "v1", "gatewayclasses", "GatewayClass", False, True),
    Kind("gateway.networking.k8s.io", "v1", "gateways", "Gateway", status=True),
    Kind("gateway.networking.k8s.io", "v1alpha2", "udproutes", "UDPRoute", status=True),
    Kind(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
]
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
Key = tuple[str, str]  # (namespace, name)


def status(code: int, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }
    return web.json_response(body, status=code)


class ApiServer:
    def __init__(self) -> None:
        self.store: dict[Kind, dict[Key, dict[str, Any]]] = {k: {} for k in KINDS}
        self.history: list[tuple[int, Kind, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.rv = 0
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.port = 0

    # --- test-side helpers -----------------------------------------------------------------

    def kind_of(self, kind: str) -> Kind:
        return next(k for k in KINDS if k.kind == kind)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store[self.kind_of(kind)].get((namespace, name))

    async def put(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace an object as a user would (bumps generation on spec changes)."""
        kind = self.kind_of(obj["kind"])
        meta = obj["metadata"]
        old = self.store[kind].get((meta.get("namespace", ""), meta["name"]))
        return await self._write(kind, dict(obj), old)

    async def _write(
        self, kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None, to_status: bool = False
    ) -> dict[str, Any]:
        body = copy.deepcopy(obj)
        if kind.status and old is not None and not to_status:
            # With a status subresource, writes to the object leave its status alone.
            body.pop("status", None)
            if "status" in old:
                body["status"] = copy.deepcopy(old["status"])
        body.setdefault("apiVersion", kind.api_version)
        body.setdefault("kind", kind.kind)
        meta = body.setdefault("metadata", {})
        if not kind.namespaced:
            meta.pop("namespace", None)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        if old is None:
            meta.setdefault("uid", f"uid-{self.rv}")
            meta["generation"] = 1
            meta.setdefault("creationTimestamp", "2024-05-01T12:00:00Z")
        else:
            meta["uid"] = old["metadata"]["uid"]
            bump = old.get("spec") != body.get("spec")
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if bump else 0)
        self.store[kind][(meta.get("namespace", ""), meta["name"])] = body
        event = {"type": "ADDED" if old is None else "MODIFIED", "object": copy.deepcopy(body)}
        self.history.append((self.rv, kind, event))
        async with self.changed:
            self.changed.notify_all()
        return body

    # --- HTTP ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _discovery(self, path: str) -> web.Response | None:
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for k in KINDS:
                if k.group:
                    groups.setdefault(k.group, [])
                    if k.version not in groups[k.group]:
                        groups[k.group].append(k.version)
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                        }
                        for g, vs in groups.items()
                    ],
                }
            )
        for gv in {(k.group, k.version) for k in KINDS}:
            prefix = f"/apis/{gv[0]}/{gv[1]}" if gv[0] else f"/api/{gv[1]}"
            if path == prefix:
                resources = []
                for k in KINDS:
                    if (k.group, k.version) != gv:
                        continue
                    resources.append(
                        {
                            "name": k.plural,
                            "singularName": k.kind.lower(),
                            "namespaced": k.namespaced,
                            "kind": k.kind,
                            "verbs": VERBS,
                        }
                    )
                    if k.status:
                        resources.append(
                            {
                                "name": f"{k.plural}/status",
                                "singularName": "",
                                "namespaced": k.namespaced,
                                "kind": k.kind,
                                "verbs": ["get", "patch", "update"],
                            }
                        )
                return web.json_response(
                    {
                        "kind": "APIResourceList",
                        "groupVersion": gv[1] if not gv[0] else f"{gv[0]}/{gv[1]}",
                        "resources": resources,
                    }
                )
        return None

    def _route(self, path: str) -> tuple[Kind, str | None, str | None, bool] | None:
        for k in KINDS:
            prefix = f"/apis/{k.group}/{k.version}" if k.group else f"/api/{k.version}"
            if not path.startswith(prefix + "/"):
                continue
            parts = path[len(prefix) + 1 :].split("/")
            ns = None
            if k.namespaced and len(parts) >= 3 and parts[0] == "namespaces":
                ns, parts = parts[1], parts[2:]
            if parts[0] != k.plural:
                continue
            name = parts[1] if len(parts) > 1 else None
            return k, ns, name, len(parts) > 2 and parts[2] == "status"
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        found = self._discovery(request.path)
        if found is not None:
            return found
        route = self._route(request.path)
        if route is None:
            return status(404, f"no route {request.path}")
        kind, ns, name, sub = route
        items = self.store[kind]
        if request.method == "GET" and name is None:
            if request.query.get("watch") == "true":
                return await self._watch(request, kind, ns)
            objs = [o for (n, _), o in sorted(items.items()) if ns is None or n == ns]
            selector = request.query.get("labelSelector")
            if selector:
                lk, _, lv = selector.partition("=")
                objs = [o for o in objs if (o["metadata"].get("labels") or {}).get(lk) == lv]
            return web.json_response(
                {
                    "kind": f"{kind.kind}List",
                    "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": [
                        {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                        for o in objs
                    ],
                }
            )
        key = (ns or "", name or "")
        current = items.get(key)
        if request.method == "GET":
            return (
                web.json_response(current)
                if current
                else status(404, f"{kind.plural} {name} not found")
            )
        body = await request.json()
        if request.method == "POST":
            if kind.plural == "events":
                return web.json_response(body, status=201)
            key = (ns or "", body["metadata"]["name"])
            if key in items:
                return status(409, "already exists")
            body["metadata"]["namespace"] = ns
            return web.json_response(await self._write(kind, body, None), status=201)
        if current is None:
            return status(404, f"{kind.plural} {name} not found")
        if request.method == "PUT":
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return status(409, "the object has been modified")
            return web.json_response(await self._write(kind, body, current))
        if request.method == "PATCH":
            part = {"status": body.get("status")} if sub else body
            new = merge_patch(current, part)
            return web.json_response(await self._write(kind, new, current, to_status=sub))
        return status(405, "method not allowed")

    async def _watch(self, request: web.Request, kind: Kind, ns: str | None) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        sent = int(request.query.get("resourceVersion") or self.rv)
        while True:
            snapshot = list(self.history)
            for rv, k, event in snapshot:
                obj_ns = event["object"]["metadata"].get("namespace")
                if rv > sent and k == kind and (ns is None or obj_ns == ns):
                    await resp.write(json.dumps(event).encode() + b"\n")
            sent = max([sent, *(rv for rv, _, _ in snapshot)])
            async with self.changed:
                if not self.history or self.history[-1][0] <= sent:
                    await self.changed.wait()
