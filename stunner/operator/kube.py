"""The operator's only door to the Kubernetes API: a few dict-in, dict-out calls.

Everything above this module (reconcile, handlers) talks to `ClusterApi`, so tests swap in a
fake with the same methods and keep the rest real. `KubeApi` implements it on
kubernetes_asyncio's `ApiClient`, using raw REST paths so that core objects and custom
resources go through the same few lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from .resources import Obj, Resource

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A failed API call. `temporary` says whether retrying the same call may succeed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status

    @property
    def temporary(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500


class ClusterApi(Protocol):
    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        """The object, or None if it does not exist (404)."""

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        """All objects (in all namespaces when `namespace` is None)."""

    async def create(self, res: Resource, namespace: str, body: Obj) -> Obj: ...

    async def replace(self, res: Resource, namespace: str, name: str, body: Obj) -> Obj:
        """PUT; `body` carries metadata.resourceVersion, so a stale write fails with 409."""

    async def patch(
        self, res: Resource, namespace: str | None, name: str, body: Obj, status: bool = False
    ) -> Obj:
        """JSON merge patch of the object, or of its status subresource."""


class KubeApi:
    """`ClusterApi` over kubernetes_asyncio; open with `connect`, close with `close`."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client

    @classmethod
    async def connect(cls) -> KubeApi:
        """In-cluster service account if there is one, else $KUBECONFIG or ~/.kube/config."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # Read $KUBECONFIG now: the library reads it once, at import.
            await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            return await self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=dict(body) if body is not None else None,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:
            raise ApiError(int(exc.status or 0), _reason(exc)) from None

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            obj = await self._call("GET", res.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _mapping(obj)

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        try:
            found = _mapping(await self._call("GET", res.path(namespace), query=query))
        except ApiError as exc:
            if exc.status == 404:  # the CRD is not installed (yet)
                return []
            raise
        items = found.get("items")
        # List items carry neither apiVersion nor kind; put them back for owner references.
        return [
            {"apiVersion": res.api_version, "kind": res.kind, **item}
            for item in (items if isinstance(items, list) else [])
            if isinstance(item, Mapping)
        ]

    async def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        return _mapping(await self._call("POST", res.path(namespace), body=body))

    async def replace(self, res: Resource, namespace: str, name: str, body: Obj) -> Obj:
        return _mapping(await self._call("PUT", res.path(namespace, name), body=body))

    async def patch(
        self, res: Resource, namespace: str | None, name: str, body: Obj, status: bool = False
    ) -> Obj:
        path = res.path(namespace, name) + ("/status" if status else "")
        return _mapping(await self._call("PATCH", path, body=body, content_type=MERGE_PATCH))


def _mapping(value: object) -> Obj:
    return value if isinstance(value, Mapping) else {}


def _reason(exc: ApiException) -> str:
    """The API server's Status message when there is one, else the HTTP reason."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(status.get("message") or exc.reason) if isinstance(status, dict) else str(exc.reason)
