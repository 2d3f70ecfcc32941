"""`KubeApi`, the real client wrapper, against a small stand-in API server on 127.0.0.1: the
paths, verbs, content types and error mapping the operator depends on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from stunner.operator.kube import ApiError, KubeApi
from stunner.operator.resources import CONFIGMAPS, GATEWAYCONFIGS, GATEWAYS, PODS, UDPROUTES
from tests.operator.apiserver import status

Request = tuple[str, str, str, str, Any, str]  # method, path, query, content type, body, auth


class Server:
    """Answers a fixed set of requests and records each one."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        auth = request.headers.get("Authorization", "")
        self.requests.append(
            (request.method, request.path, request.query_string, request.content_type, body, auth)
        )
        route = (request.method, request.path)
        gc = "/apis/stunner.l7mp.io/v1alpha1/namespaces/stunner/gatewayconfigs"
        cms = "/api/v1/namespaces/stunner/configmaps"
        if route == ("GET", f"{gc}/stunner-gatewayconfig"):
            return web.json_response(
                {"kind": "GatewayConfig", "metadata": {"name": "stunner-gatewayconfig"}}
            )
        if route == ("GET", "/apis/gateway.networking.k8s.io/v1/gateways"):
            return web.json_response(
                {"kind": "GatewayList", "items": [{"metadata": {"name": "gw"}}]}
            )
        if route == (
            "PATCH",
            "/apis/gateway.networking.k8s.io/v1/namespaces/stunner/gateways/gw/status",
        ):
            return web.json_response({"kind": "Gateway", **(body or {})})
        if route == ("POST", cms):
            return web.json_response(body, status=201)
        if route == ("PUT", f"{cms}/stunnerd-config"):
            return status(409, "Operation cannot be fulfilled: the object has been modified")
        if route == ("GET", "/api/v1/namespaces/stunner/pods"):
            return web.json_response({"kind": "PodList", "items": []})
        if route == ("GET", f"{cms}/broken"):
            return web.Response(status=500, text="not json")
        return status(404, "not found")


@pytest.fixture
async def api() -> AsyncIterator[tuple[KubeApi, Server]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = client.Configuration(host=f"http://127.0.0.1:{port}")
    cfg.api_key = {"BearerToken": "test-token"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    kube = KubeApi(client.ApiClient(cfg))
    try:
        yield kube, server
    finally:
        await kube.close()
        await runner.cleanup()


async def test_get_and_missing(api: tuple[KubeApi, Server]) -> None:
    kube, server = api
    obj = await kube.get(GATEWAYCONFIGS, "stunner", "stunner-gatewayconfig")
    assert obj == {"kind": "GatewayConfig", "metadata": {"name": "stunner-gatewayconfig"}}
    assert await kube.get(GATEWAYCONFIGS, "stunner", "nope") is None
    method, path, _, _, _, auth = server.requests[0]
    assert (method, path, auth) == (
        "GET",
        "/apis/stunner.l7mp.io/v1alpha1/namespaces/stunner/gatewayconfigs/stunner-gatewayconfig",
        "Bearer test-token",
    )


async def test_list_restores_kind_and_tolerates_missing_crd(api: tuple[KubeApi, Server]) -> None:
    kube, server = api
    assert await kube.list(GATEWAYS) == [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw"},
        }
    ]
    assert await kube.list(UDPROUTES) == []  # 404: the experimental CRDs are not installed
    await kube.list(PODS, "stunner", label_selector="app=stunner")
    assert server.requests[-1][:3] == (
        "GET",
        "/api/v1/namespaces/stunner/pods",
        "labelSelector=app%3Dstunner",
    )


async def test_status_patch_is_a_merge_patch(api: tuple[KubeApi, Server]) -> None:
    kube, server = api
    body = {"status": {"conditions": []}}
    assert await kube.patch(GATEWAYS, "stunner", "gw", body, status=True) == {
        "kind": "Gateway",
        **body,
    }
    method, path, _, ctype, sent, _ = server.requests[-1]
    assert (method, path, ctype, sent) == (
        "PATCH",
        "/apis/gateway.networking.k8s.io/v1/namespaces/stunner/gateways/gw/status",
        "application/merge-patch+json",
        body,
    )


async def test_create_and_conflict(api: tuple[KubeApi, Server]) -> None:
    kube, server = api
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stunnerd-config"}}
    assert await kube.create(CONFIGMAPS, "stunner", cm) == cm
    assert server.requests[-1][:4] == (
        "POST",
        "/api/v1/namespaces/stunner/configmaps",
        "",
        "application/json",
    )
    with pytest.raises(ApiError) as caught:
        await kube.replace(CONFIGMAPS, "stunner", "stunnerd-config", cm)
    assert caught.value.status == 409 and caught.value.temporary
    assert (
        str(caught.value) == "HTTP 409: Operation cannot be fulfilled: the object has been modified"
    )


async def test_errors_without_a_status_body(api: tuple[KubeApi, Server]) -> None:
    kube, _ = api
    with pytest.raises(ApiError) as caught:
        await kube.get(CONFIGMAPS, "stunner", "broken")
    assert caught.value.status == 500 and caught.value.temporary
    assert str(caught.value) == "HTTP 500: Internal Server Error"


def test_temporary_classification() -> None:
    assert [ApiError(s, "").temporary for s in (400, 403, 404, 409, 422, 429, 500, 503)] == [
        False,
        False,
        False,
        True,
        False,
        True,
        True,
        True,
    ]


def test_paths() -> None:
    assert GATEWAYS.path() == "/apis/gateway.networking.k8s.io/v1/gateways"
    assert CONFIGMAPS.path("ns", "x") == "/api/v1/namespaces/ns/configmaps/x"
    assert json.dumps(PODS.api_version) == '"v1"'


async def test_connect_uses_the_kubeconfig(
    api: tuple[KubeApi, Server], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a pod (no service account) `connect` falls back to $KUBECONFIG."""
    other, server = api
    host = other._client.configuration.host
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": host}}],
        "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube = await KubeApi.connect()
    try:
        assert await kube.get(GATEWAYCONFIGS, "stunner", "stunner-gatewayconfig") is not None
    finally:
        await kube.close()
    assert server.requests[-1][5] == "Bearer from-kubeconfig"
