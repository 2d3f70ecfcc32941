"""The kopf handlers and the reconciler, for real, against `FakeApi` (the only fake): what
they write to the ConfigMap, which statuses they patch, and how they fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from stunner import constants as c
from stunner.operator import handlers
from stunner.operator.kube import ApiError
from stunner.operator.reconcile import CONFIG_DIGEST_ANNOTATION, Reconciler

from . import objects as o
from .fake_api import FakeApi
from .test_render import PATCHED_METRICS, SPEC_METRICS, expected_text

NOW = "2024-05-01T12:00:00Z"
LATER = "2024-05-01T12:05:00Z"
GC = ("stunner", c.GATEWAYCONFIG_NAME)


def cluster(*extra: Any) -> FakeApi:
    """The spec's GatewayConfig, our GatewayClass, a Gateway, a UDPRoute and its backend, and
    a stunnerd pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stunner-abc", "namespace": "stunner", "labels": {"app": "stunner"}},
    }
    return FakeApi(
        o.gatewayconfig(metricsEndpoint=SPEC_METRICS),
        o.gatewayclass(),
        o.gateway(),
        o.udproute(),
        o.service(),
        o.endpoints(),
        pod,
        *extra,
    )


@pytest.fixture
async def operator() -> AsyncIterator[tuple[FakeApi, kopf.Memo]]:
    """`handlers.startup` with the fake API; `handlers.cleanup` afterwards."""
    api = cluster()
    memo = kopf.Memo(api=api)
    settings = kopf.OperatorSettings()
    await handlers.startup(settings=settings, memo=memo, logger=logging.getLogger("test"))
    rec = memo["reconciler"]
    assert isinstance(rec, Reconciler)
    rec.now = lambda: NOW
    try:
        yield api, memo
    finally:
        await handlers.cleanup(memo=memo, logger=logging.getLogger("test"))
        assert memo["resync"].done()


async def changed(memo: kopf.Memo, namespace: str = GC[0], name: str = GC[1]) -> None:
    await handlers.gatewayconfig_changed(namespace=namespace, name=name, memo=memo)


def configmap_text(api: FakeApi) -> str:
    cm = api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME)
    assert cm is not None
    return str(cm["data"][c.CONFIGMAP_KEY])


def conditions(
    obj: dict[str, Any] | None, path: tuple[str, ...] = ()
) -> dict[str, tuple[str, str]]:
    assert obj is not None
    node: Any = obj.get("status", obj)
    for part in path:
        node = node[part]
    return {x["type"]: (x["status"], x["reason"]) for x in node["conditions"]}


def test_settings_keep_kopf_state_in_status() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert isinstance(settings.persistence.progress_storage, kopf.StatusProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.StatusDiffBaseStorage)
    assert settings.peering.standalone is True


async def test_create_writes_the_configmap(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    assert configmap_text(api) == expected_text(metrics_endpoint=SPEC_METRICS)
    cm = api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME)
    assert cm is not None
    (owner,) = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "GatewayConfig",
        c.GATEWAYCONFIG_NAME,
        "uid-stunner-stunner-gatewayconfig",
    )
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "stunner-operator"


async def test_create_reports_status_everywhere(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    gc = api.obj("GatewayConfig", *GC)
    assert conditions(gc) == {
        "Accepted": ("True", "Accepted"),
        "Programmed": ("True", "Programmed"),
    }
    assert gc is not None
    assert gc["status"]["conditions"][0] == {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "1 listeners, 1 clusters",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }
    assert conditions(api.obj("GatewayClass", "", o.CLASS_NAME)) == {
        "Accepted": ("True", "Accepted")
    }
    gw = api.obj("Gateway", "stunner", "udp-gateway")
    assert gw is not None
    assert conditions(gw)["Programmed"] == ("True", "Programmed")
    (lis,) = gw["status"]["listeners"]
    assert lis["name"] == "udp-listener" and lis["attachedRoutes"] == 1
    assert lis["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "UDPRoute"}]
    assert conditions(lis) == {
        "Accepted": ("True", "Accepted"),
        "Conflicted": ("False", "NoConflicts"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
        "Programmed": ("True", "Programmed"),
    }
    route = api.obj("UDPRoute", "stunner", "media-plane")
    assert route is not None
    (parent,) = route["status"]["parents"]
    assert parent["parentRef"] == {"name": "udp-gateway"}
    assert parent["controllerName"] == c.CONTROLLER_NAME
    assert conditions(parent) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }


async def test_second_reconcile_writes_nothing(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    memo["reconciler"].now = lambda: LATER
    before = len(api.writes())
    await changed(memo)
    assert api.writes()[before:] == []


async def test_metrics_endpoint_patch(operator: tuple[FakeApi, kopf.Memo]) -> None:
    """The spec's `kubectl patch ... metricsEndpoint` turns into admin.metrics_endpoint."""
    api, memo = operator
    await changed(memo)
    api.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS, generation=2))
    before = len(api.writes())
    await changed(memo)
    assert configmap_text(api) == expected_text(metrics_endpoint=PATCHED_METRICS)
    assert ("replace", "configmaps", "stunner", c.CONFIGMAP_NAME) in api.writes()[before:]
    pod = api.obj("Pod", "stunner", "stunner-abc")
    assert pod is not None
    digest = pod["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION]
    assert len(digest) == 16
    gc = api.obj("GatewayConfig", *GC)
    assert gc is not None
    assert {x["observedGeneration"] for x in gc["status"]["conditions"]} == {2}


async def test_invalid_spec_is_reported_not_crashed(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    good = configmap_text(api)
    api.put(o.gatewayconfig(realm="Bad Realm", generation=2))
    with pytest.raises(kopf.PermanentError, match=r"spec\.realm: 'Bad Realm' does not match"):
        await changed(memo)
    assert configmap_text(api) == good  # stunnerd keeps running the last good config
    gc = api.obj("GatewayConfig", *GC)
    assert conditions(gc) == {
        "Accepted": ("False", "InvalidParameters"),
        "Programmed": ("False", "Invalid"),
    }
    assert gc is not None
    assert gc["status"]["conditions"][0]["message"].startswith("spec.realm: 'Bad Realm'")
    assert conditions(api.obj("Gateway", "stunner", "udp-gateway"))["Programmed"] == (
        "False",
        "Invalid",
    )


async def test_invalid_spec_creates_no_configmap(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    api.put(o.gatewayconfig(userName=None))
    with pytest.raises(kopf.PermanentError, match="required for plaintext auth"):
        await changed(memo)
    assert api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME) is None


async def test_configmap_conflict_is_retried(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    api.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS, generation=2))
    api.failures[("replace", "configmaps")] = ApiError(409, "the object has been modified")
    with pytest.raises(kopf.TemporaryError) as caught:
        await changed(memo)
    assert caught.value.delay == handlers.RETRY_DELAY
    assert conditions(api.obj("GatewayConfig", *GC))["Programmed"] == ("False", "Pending")
    del api.failures[("replace", "configmaps")]
    await changed(memo)
    assert "metrics_endpoint: http://0.0.0.0:8080/metrics" in configmap_text(api)
    assert conditions(api.obj("GatewayConfig", *GC))["Programmed"] == ("True", "Programmed")


async def test_forbidden_write_is_permanent(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    api.failures[("create", "configmaps")] = ApiError(403, "forbidden")
    with pytest.raises(kopf.PermanentError, match="HTTP 403"):
        await changed(memo)


async def test_endpoints_event_updates_the_cluster(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    eps = api.put(o.endpoints(ips=("10.244.3.3",)))
    await handlers.endpoints_event(type="MODIFIED", body=kopf.Body(eps), memo=memo)
    assert "- 10.244.3.3\n" in configmap_text(api)
    assert "10.244.0.5" not in configmap_text(api)


async def test_unrelated_service_event_costs_nothing(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    before = len(api.calls)
    other = o.service(name="unrelated", namespace="kube-system")
    await handlers.service_event(type="ADDED", body=kopf.Body(other), memo=memo)
    assert api.calls[before:] == []


async def test_status_only_event_is_skipped(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    gw = api.obj("Gateway", "stunner", "udp-gateway")
    assert gw is not None
    before = len(api.calls)
    await handlers.gateway_event(type="MODIFIED", body=kopf.Body(gw), memo=memo)
    assert api.calls[before:] == []


async def test_new_listener_and_deleted_gateway(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    listeners = [o.listener("udp-listener", "UDP", 3478), o.listener("tcp-listener", "TCP", 3478)]
    gw = api.put(o.gateway(listeners=listeners, generation=2))
    await handlers.gateway_event(type="MODIFIED", body=kopf.Body(gw), memo=memo)
    assert "name: stunner/udp-gateway/tcp-listener\n" in configmap_text(api)
    api.delete("Gateway", "stunner", "udp-gateway")
    await handlers.gateway_event(type="DELETED", body=kopf.Body(gw), memo=memo)
    assert "listeners: []\n" in configmap_text(api)
    assert "clusters: []\n" in configmap_text(api)


async def test_new_route_event_finds_its_gatewayconfig(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    route = api.put(
        o.udproute(name="second", backends=[{"name": "media-server", "namespace": "default"}])
    )
    await handlers.udproute_event(type="ADDED", body=kopf.Body(route), memo=memo)
    assert "- name: stunner/second\n" in configmap_text(api)


async def test_route_moved_away_releases_our_parent_status(
    operator: tuple[FakeApi, kopf.Memo],
) -> None:
    api, memo = operator
    await changed(memo)
    route = api.obj("UDPRoute", "stunner", "media-plane")
    assert route is not None
    foreign = {
        "parentRef": {"name": "other"},
        "controllerName": "example.com/other",
        "conditions": [],
    }
    route["status"]["parents"].append(foreign)
    route["spec"]["parentRefs"] = [{"name": "other"}]
    route["metadata"]["generation"] = 2
    route = api.put(route)
    await handlers.udproute_event(type="MODIFIED", body=kopf.Body(route), memo=memo)
    moved = api.obj("UDPRoute", "stunner", "media-plane")
    assert moved is not None
    assert moved["status"]["parents"] == [foreign]
    assert "clusters: []\n" in configmap_text(api)


async def test_gateway_of_another_class_is_left_alone(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    api.put(o.gatewayclass(name="other-class", controller="example.com/other", params=None))
    gw = api.put(o.gateway(name="theirs", class_name="other-class"))
    await changed(memo)
    await handlers.gateway_event(type="ADDED", body=kopf.Body(gw), memo=memo)
    assert "theirs" not in configmap_text(api)
    theirs = api.obj("Gateway", "stunner", "theirs")
    assert theirs is not None and "status" not in theirs
    assert api.obj("GatewayClass", "", "other-class") is not None
    assert "status" not in (api.obj("GatewayClass", "", "other-class") or {})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "spec.parametersRef must name a stunner.l7mp.io GatewayConfig"),
        (("stunner", "missing"), "GatewayConfig stunner/missing not found"),
    ],
)
async def test_gatewayclass_with_unusable_parameters(
    operator: tuple[FakeApi, kopf.Memo], params: tuple[str, str] | None, message: str
) -> None:
    api, memo = operator
    gwc = api.put(o.gatewayclass(name="broken", params=params))
    await handlers.gatewayclass_event(type="ADDED", body=kopf.Body(gwc), memo=memo)
    broken = api.obj("GatewayClass", "", "broken")
    assert broken is not None
    (accepted,) = broken["status"]["conditions"]
    assert (accepted["status"], accepted["reason"], accepted["message"]) == (
        "False",
        "InvalidParameters",
        message,
    )


async def test_pods_forbidden_turns_the_nudge_off(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    api.failures[("list", "pods")] = ApiError(403, "forbidden")
    await changed(memo)  # the ConfigMap write still counts
    assert api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME) is not None
    assert memo["reconciler"].nudge_pods is False
    api.put(o.gatewayconfig(metricsEndpoint=PATCHED_METRICS, generation=2))
    before = len(api.calls)
    await changed(memo)
    assert [x for x in api.calls[before:] if x[1] == "pods"] == []


async def test_redo_returns_what_to_retry(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    api.failures[("create", "configmaps")] = ApiError(503, "unavailable")
    rec = memo["reconciler"]
    assert await handlers.redo(rec, [GC]) == [GC]
    del api.failures[("create", "configmaps")]
    assert await handlers.redo(rec, await rec.all_gatewayconfigs()) == []
    assert api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME) is not None


async def test_resync_loop_reconciles_and_stops_on_cancel() -> None:
    api = cluster()
    rec = Reconciler(api, now=lambda: NOW)
    task = asyncio.create_task(handlers.resync(rec, interval=0.01))
    try:
        for _ in range(500):  # bounded poll, no fixed sleep
            if api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME) is not None:
                break
            await asyncio.sleep(0.01)
        assert api.obj("ConfigMap", "stunner", c.CONFIGMAP_NAME) is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_deleted_gatewayconfig_is_forgotten(operator: tuple[FakeApi, kopf.Memo]) -> None:
    api, memo = operator
    await changed(memo)
    assert memo["reconciler"].tracked() == [GC]
    api.delete("GatewayConfig", *GC)
    await changed(memo)
    assert memo["reconciler"].tracked() == []
    assert handlers.probe(memo=memo, logger=logging.getLogger("test")) == 0
