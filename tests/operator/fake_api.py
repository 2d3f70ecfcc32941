"""An in-memory `ClusterApi`: the only fake in the operator tests. It stores objects, applies
merge patches like the API server, records every call, and fails calls on request."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from stunner.operator.kube import ApiError
from stunner.operator.resources import Obj, Resource

Call = tuple[str, str, str | None, str]  # (verb, plural, namespace, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeApi:
    def __init__(self, *objs: Obj) -> None:
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.failures: dict[tuple[str, str], ApiError] = {}
        self._version = 0
        for obj in objs:
            self.put(obj)

    @staticmethod
    def plural(kind: str) -> str:
        return {"Endpoints": "endpoints", "GatewayClass": "gatewayclasses"}.get(
            kind, kind.lower() + "s"
        )

    def put(self, obj: Obj) -> dict[str, Any]:
        """Store (or overwrite) an object as a test fixture; not recorded as a call."""
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        self._version += 1
        meta["resourceVersion"] = str(self._version)
        ident = (self.plural(body["kind"]), meta.get("namespace") or "", meta["name"])
        self.store[ident] = body
        return body

    def delete(self, kind: str, namespace: str, name: str) -> None:
        del self.store[(self.plural(kind), namespace, name)]

    def obj(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get((self.plural(kind), namespace, name))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c[0] not in ("get", "list")]

    def _enter(self, verb: str, res: Resource, namespace: str | None, name: str) -> None:
        self.calls.append((verb, res.plural, namespace, name))
        failure = self.failures.get((verb, res.plural))
        if failure is not None:
            raise failure

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        self._enter("get", res, namespace, name)
        found = self.store.get((res.plural, namespace or "", name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        self._enter("list", res, namespace, label_selector or "")
        out = []
        for (plural, ns, _), obj in sorted(self.store.items()):
            if plural != res.plural or (namespace is not None and ns != namespace):
                continue
            if label_selector:
                k, _, v = label_selector.partition("=")
                if (obj["metadata"].get("labels") or {}).get(k) != v:
                    continue
            out.append(copy.deepcopy(obj))
        return out

    async def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        self._enter("create", res, namespace, name)
        if (res.plural, namespace, name) in self.store:
            raise ApiError(409, "already exists")
        return self.put(body)

    async def replace(self, res: Resource, namespace: str, name: str, body: Obj) -> Obj:
        self._enter("replace", res, namespace, name)
        current = self.store.get((res.plural, namespace, name))
        if current is None:
            raise ApiError(404, "not found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        return self.put(body)

    async def patch(
        self, res: Resource, namespace: str | None, name: str, body: Obj, status: bool = False
    ) -> Obj:
        self._enter("patch-status" if status else "patch", res, namespace, name)
        ident = (res.plural, namespace or "", name)
        if ident not in self.store:
            raise ApiError(404, "not found")
        part = {"status": body.get("status")} if status else body
        return self.put(merge_patch(self.store[ident], part))
