"""docs/kubernetes.md's RBAC block covers every API call the operator makes: kopf's watches
(from the handler registry) and the reconciler's calls (recorded by `FakeApi` over a scenario
that touches every kind of object)."""

from __future__ import annotations

import re
from pathlib import Path

import kopf
import pytest
import yaml

from stunner import constants as c
from stunner.operator import handlers
from stunner.operator.kube import ApiError
from stunner.operator.reconcile import InvalidGatewayConfig, Reconciler
from stunner.operator.resources import GATEWAY_GROUP, STUNNER_GROUP

from . import objects as o
from .fake_api import FakeApi

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
GROUPS = {
    "gatewayconfigs": STUNNER_GROUP,
    "gatewayclasses": GATEWAY_GROUP,
    "gateways": GATEWAY_GROUP,
    "udproutes": GATEWAY_GROUP,
}
VERBS = {"get": "get", "list": "list", "create": "create", "replace": "update", "patch": "patch"}

Grant = tuple[str, str, str]  # (group, resource, verb)


def documented() -> set[Grant]:
    (block,) = re.findall(r"```yaml\n# operator-rbac\n(.*?)```", DOC.read_text(), re.S)
    grants = set()
    for rule in yaml.safe_load(block):
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                grants |= {(group, res, verb) for verb in rule["verbs"]}
    return grants


def watched() -> set[Grant]:
    registry = kopf.get_default_registry()
    handlers_ = [*registry._watching.get_all_handlers(), *registry._changing.get_all_handlers()]
    out: set[Grant] = set()
    for h in handlers_:
        sel = h.selector
        assert sel is not None
        out |= {(sel.group or "", str(sel.any_name), v) for v in ("list", "watch")}
    return out


async def used() -> set[Grant]:
    """Every call of a reconcile with TLS, authRef, pods to nudge, a bad class and a bad spec."""
    gw = o.gateway(
        listeners=[
            o.listener("udp", "UDP", 3478),
            o.listener("tls", "TLS", 3479, tls={"certificateRefs": [{"name": "stunner-tls"}]}),
        ]
    )
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "stunner", "labels": {"app": "stunner"}},
    }
    api = FakeApi(
        o.gatewayconfig(authRef={"name": "stunner-auth"}),
        o.auth_secret(type="plaintext", username="u", password="p"),
        o.tls_secret(),
        o.gatewayclass(),
        gw,
        o.udproute(),
        o.service(),
        o.endpoints(),
        pod,
    )
    rec = Reconciler(api)
    gc = ("stunner", c.GATEWAYCONFIG_NAME)
    await rec.reconcile(gc)  # create
    api.put(
        o.gatewayconfig(authRef={"name": "stunner-auth"}, metricsEndpoint="http://:8080/metrics")
    )
    await rec.reconcile(gc)  # update + nudge
    await rec.report_class(api.put(o.gatewayclass(name="broken", params=None)))
    route = o.udproute()
    route["spec"]["parentRefs"] = [{"name": "elsewhere"}]
    api.put(route)
    await rec.reconcile(gc)  # release the route's parent status
    api.failures[("get", "secrets")] = ApiError(403, "forbidden")
    with pytest.raises(InvalidGatewayConfig, match="Secret stunner/stunner-auth not found or"):
        await rec.reconcile(gc)  # reported in the status, not a crash
    out: set[Grant] = set()
    for verb, plural, _, _ in api.calls:
        if plural in ("namespaces",):
            continue
        resource = f"{plural}/status" if verb == "patch-status" else plural
        out.add((GROUPS.get(plural, ""), resource, VERBS.get(verb, "patch")))
    return out


async def test_rbac_block_covers_every_call() -> None:
    needed = watched() | await used() | {("", "events", "create")}
    missing = needed - documented()
    assert not missing, f"docs/kubernetes.md RBAC lacks {sorted(missing)}"


async def test_scenario_exercises_secrets_and_pods() -> None:
    calls = await used()
    assert ("", "secrets", "get") in calls
    assert ("", "pods", "patch") in calls
    assert ("gateway.networking.k8s.io", "udproutes/status", "patch") in calls
    assert handlers.RESYNC_INTERVAL == 60.0  # the docs promise this
