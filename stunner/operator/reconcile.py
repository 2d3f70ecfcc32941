"""Level-triggered reconciliation: read the objects, render, write the ConfigMap and statuses.

Each reconcile of a GatewayConfig reads the current state through `ClusterApi`, so it does not
matter which event woke it up, and reconciles of one GatewayConfig run one at a time. The
reconciler remembers which objects each GatewayConfig used, so an event for a Service, or for a
Gateway that has just left, still finds the GatewayConfig to redo.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from stunner import constants as c

from . import conditions as cond
from .conditions import Condition, ok, to_k8s
from .kube import ApiError, ClusterApi
from .render import GatewayStatus, ParentStatus, RenderInput, RenderResult, dump_config, render
from .resources import (
    CONFIGMAPS,
    ENDPOINTS,
    GATEWAYCLASSES,
    GATEWAYCONFIGS,
    GATEWAYS,
    PODS,
    SECRETS,
    SERVICES,
    STUNNER_GROUP,
    UDPROUTES,
    Obj,
    ObjKey,
    Resource,
    generation,
    key,
    meta,
    name_of,
    spec,
)

logger = logging.getLogger("stunner.operator")

MANAGED_BY = {"app.kubernetes.io/managed-by": "stunner-operator"}
CONFIG_DIGEST_ANNOTATION = f"{STUNNER_GROUP}/config-digest"

Member = tuple[str, str, str]
"""(kind, namespace, name); Service stands for the Service and its Endpoints."""


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InvalidGatewayConfig(Exception):
    """The GatewayConfig was rejected; its status says why. Not worth retrying."""


@dataclass(frozen=True, slots=True)
class Outcome:
    gatewayconfig: ObjKey
    found: bool
    written: bool = False


def parameters_of(gatewayclass: Obj, default_namespace: str) -> ObjKey | str:
    """The GatewayConfig a GatewayClass of ours points at, or why it does not."""
    ref = spec(gatewayclass).get("parametersRef")
    if not isinstance(ref, Mapping):
        return "spec.parametersRef must name a stunner.l7mp.io GatewayConfig"
    if ref.get("group") != STUNNER_GROUP or ref.get("kind") != "GatewayConfig":
        return f"spec.parametersRef: expected {STUNNER_GROUP}/GatewayConfig"
    namespace = str(ref.get("namespace") or default_namespace)
    if not namespace or not ref.get("name"):
        return "spec.parametersRef: name and namespace are required"
    return (namespace, str(ref["name"]))


def is_ours(gatewayclass: Obj) -> bool:
    return spec(gatewayclass).get("controllerName") == c.CONTROLLER_NAME


def parent_gateways(route: Obj) -> list[ObjKey]:
    out = []
    for ref in spec(route).get("parentRefs") or []:
        if isinstance(ref, Mapping) and ref.get("kind", "Gateway") == "Gateway":
            out.append((str(ref.get("namespace") or key(route)[0]), str(ref.get("name") or "")))
    return out


def backend_services(route: Obj) -> list[ObjKey]:
    out = []
    for rule in spec(route).get("rules") or []:
        for ref in (rule.get("backendRefs") or []) if isinstance(rule, Mapping) else []:
            if isinstance(ref, Mapping) and (ref.get("kind") or "Service") == "Service":
                out.append((str(ref.get("namespace") or key(route)[0]), str(ref.get("name"))))
    return out


def secret_refs(gatewayconfig: Obj, gateways: Iterable[Obj]) -> list[ObjKey]:
    """Secrets the render may need: the authRef and the TLS listeners' certificates."""
    out = []
    auth = spec(gatewayconfig).get("authRef")
    if isinstance(auth, Mapping) and auth.get("name"):
        out.append((str(auth.get("namespace") or key(gatewayconfig)[0]), str(auth["name"])))
    for gw in gateways:
        for lis in spec(gw).get("listeners") or []:
            tls = lis.get("tls") if isinstance(lis, Mapping) else None
            refs = tls.get("certificateRefs") if isinstance(tls, Mapping) else None
            for ref in refs if isinstance(refs, list) else []:
                if isinstance(ref, Mapping) and ref.get("name"):
                    out.append((str(ref.get("namespace") or key(gw)[0]), str(ref["name"])))
    return out


class Reconciler:
    def __init__(
        self,
        api: ClusterApi,
        *,
        default_namespace: str = "",
        now: Callable[[], str] = utcnow,
    ) -> None:
        self.api = api
        self.default_namespace = default_namespace
        self.now = now
        self.nudge_pods = True
        self._locks: dict[ObjKey, asyncio.Lock] = {}
        self._members: dict[ObjKey, frozenset[Member]] = {}
        self._generations: dict[Member, int | None] = {}

    # ----------------------------------------------------------------------------------------
    # Which GatewayConfigs does an event concern?

    def members(self, gc: ObjKey) -> frozenset[Member]:
        return self._members.get(gc, frozenset())

    def tracked(self) -> list[ObjKey]:
        return sorted(self._members)

    def seen_generation(self, kind: str, k: ObjKey) -> int | None:
        """metadata.generation of a Gateway API object as of the last reconcile that read it."""
        return self._generations.get((kind, *k))

    def _known_by(self, member: Member) -> set[ObjKey]:
        return {gc for gc, members in self._members.items() if member in members}

    async def _class_map(self) -> dict[str, ObjKey]:
        out: dict[str, ObjKey] = {}
        for gwc in await self.api.list(GATEWAYCLASSES):
            params = parameters_of(gwc, self.default_namespace)
            if is_ours(gwc) and not isinstance(params, str):
                out[key(gwc)[1]] = params
        return out

    async def affected(self, kind: str, obj: Obj) -> set[ObjKey]:
        """GatewayConfigs that used `obj` at their last reconcile or would use it now."""
        k = key(obj)
        if kind in ("Service", "Endpoints"):
            return self._known_by(("Service", *k))
        found = self._known_by((kind, *k))
        if kind == "GatewayClass":
            params = parameters_of(obj, self.default_namespace)
            if is_ours(obj) and not isinstance(params, str):
                found.add(params)
            return found
        classes = await self._class_map()
        if kind == "Gateway":
            cls = spec(obj).get("gatewayClassName")
            if isinstance(cls, str) and cls in classes:
                found.add(classes[cls])
            return found
        gateways = {key(gw): gw for gw in await self.api.list(GATEWAYS)}
        for parent in parent_gateways(obj):
            cls = spec(gateways.get(parent, {})).get("gatewayClassName")
            if isinstance(cls, str) and cls in classes:
                found.add(classes[cls])
        return found

    async def all_gatewayconfigs(self) -> list[ObjKey]:
        return sorted(key(gc) for gc in await self.api.list(GATEWAYCONFIGS))

    # ----------------------------------------------------------------------------------------

    async def reconcile(self, gc: ObjKey) -> Outcome:
        """Bring the ConfigMap and statuses in line with the objects; raises `ApiError` when a
        write failed (retry) and `InvalidGatewayConfig` after reporting a rejected spec."""
        lock = self._locks.setdefault(gc, asyncio.Lock())
        async with lock:
            return await self._reconcile(gc)

    async def _gather(
        self, gc: ObjKey, gc_obj: Obj
    ) -> tuple[list[Obj], list[Obj], list[Obj], RenderInput]:
        """Our GatewayClasses pointing at `gc`, their Gateways, the UDPRoutes attached to those,
        and everything the render needs; also records what `gc` uses, for `affected`."""
        classes = [
            gwc
            for gwc in await self.api.list(GATEWAYCLASSES)
            if is_ours(gwc) and parameters_of(gwc, self.default_namespace) == gc
        ]
        class_names = {key(gwc)[1] for gwc in classes}
        gateways = [
            gw
            for gw in await self.api.list(GATEWAYS)
            if spec(gw).get("gatewayClassName") in class_names
        ]
        gateway_keys = {key(gw) for gw in gateways}
        routes = [
            r for r in await self.api.list(UDPROUTES) if set(parent_gateways(r)) & gateway_keys
        ]
        backends = sorted({svc for r in routes for svc in backend_services(r)})
        # Remember the backends before reading them: an Endpoints event from now on re-runs us.
        self._members[gc] = frozenset(
            [("GatewayClass", "", key(x)[1]) for x in classes]
            + [("Gateway", *key(x)) for x in gateways]
            + [("UDPRoute", *key(x)) for x in routes]
            + [("Service", *b) for b in backends]
        )
        for kind, objs in (("GatewayClass", classes), ("Gateway", gateways), ("UDPRoute", routes)):
            self._generations.update({(kind, *key(o)): generation(o) for o in objs})
        inp = RenderInput(
            gatewayconfig=gc_obj,
            gateways=gateways,
            routes=routes,
            services=await self._get_all(SERVICES, backends),
            endpoints=await self._get_all(ENDPOINTS, backends),
            secrets=await self._get_all(SECRETS, sorted(set(secret_refs(gc_obj, gateways)))),
        )
        return classes, gateways, routes, inp

    async def _reconcile(self, gc: ObjKey) -> Outcome:
        gc_obj = await self.api.get(GATEWAYCONFIGS, *gc)
        if gc_obj is None:
            self._members.pop(gc, None)
            return Outcome(gc, found=False)
        previous = self.members(gc)
        classes, gateways, routes, inp = await self._gather(gc, gc_obj)
        result = render(inp)
        written = False
        failure: ApiError | None = None
        if result.config is None:
            programmed = Condition(cond.PROGRAMMED, False, cond.INVALID, result.error or "")
        else:
            try:
                written = await self._apply_configmap(gc_obj, result)
                message = f"stunnerd config in ConfigMap {name_of(result.configmap)}"
                programmed = ok(cond.PROGRAMMED, message)
            except ApiError as exc:
                failure = exc
                programmed = Condition(cond.PROGRAMMED, False, cond.PENDING, str(exc))
        await self._write_statuses(gc_obj, classes, gateways, routes, result, programmed)
        await self._release_routes(previous, gc)
        if failure is not None:
            raise failure
        if written:
            await self._nudge(result)
        if result.error is not None:
            raise InvalidGatewayConfig(f"GatewayConfig {name_of(gc)}: {result.error}")
        return Outcome(gc, found=True, written=written)

    async def _get_all(self, res: Resource, keys: Sequence[ObjKey]) -> list[Obj]:
        out = []
        for ns, name in keys:
            try:
                obj = await self.api.get(res, ns, name)
            except ApiError as exc:
                if exc.temporary:
                    raise
                logger.warning("cannot read %s %s/%s: %s", res.kind, ns, name, exc)
                continue
            if obj is not None:
                out.append(obj)
        return out

    # ----------------------------------------------------------------------------------------
    # Writes

    async def _apply_configmap(self, gc_obj: Obj, result: RenderResult) -> bool:
        """Create or update the ConfigMap; False if it already held this config."""
        assert result.config is not None
        ns, name = result.configmap
        text = dump_config(result.config)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": dict(MANAGED_BY)},
            "data": {c.CONFIGMAP_KEY: text},
        }
        kopf.adopt(body, owner=kopf.Body(dict(gc_obj)))  # type: ignore[arg-type]
        current = await self.api.get(CONFIGMAPS, ns, name)
        if current is None:
            await self.api.create(CONFIGMAPS, ns, body)
            logger.info("created ConfigMap %s/%s", ns, name)
            return True
        owners = meta(current).get("ownerReferences") or []
        uid = meta(gc_obj).get("uid")
        owned = any(isinstance(o, Mapping) and o.get("uid") == uid for o in owners)
        if current.get("data") == body["data"] and owned:
            return False
        cur_meta = meta(current)
        body["metadata"] = {
            **cur_meta,
            "labels": {**(cur_meta.get("labels") or {}), **MANAGED_BY},
            "ownerReferences": [
                *(o for o in owners if isinstance(o, Mapping) and o.get("uid") != uid),
                *body["metadata"]["ownerReferences"],
            ],
        }
        await self.api.replace(CONFIGMAPS, ns, name, body)
        logger.info("updated ConfigMap %s/%s", ns, name)
        return True

    async def _nudge(self, result: RenderResult) -> None:
        """Touch the stunnerd pods so the kubelet refreshes their ConfigMap volume now rather
        than at its next periodic sync (up to a minute or more). Optional: needs pods
        list/patch, and without it the kubelet's sync still delivers the file."""
        if not self.nudge_pods or result.config is None:
            return
        ns = result.configmap[0]
        digest = hashlib.sha256(dump_config(result.config).encode()).hexdigest()[:16]
        patch = {"metadata": {"annotations": {CONFIG_DIGEST_ANNOTATION: digest}}}
        try:
            for pod in await self.api.list(PODS, ns, label_selector=f"app={c.POD_APP_LABEL}"):
                await self.api.patch(PODS, ns, key(pod)[1], patch)
        except ApiError as exc:
            if exc.status == 403:
                self.nudge_pods = False
                logger.info("no RBAC to annotate pods; relying on kubelet sync for ConfigMaps")
            else:
                logger.warning("could not annotate stunnerd pods: %s", exc)

    async def _patch_status(self, res: Resource, obj: Obj, status: Mapping[str, Any]) -> None:
        current = _status(obj)
        if all(current.get(k) == v for k, v in status.items()):
            return
        ns, name = key(obj)
        try:
            await self.api.patch(res, ns or None, name, {"status": dict(status)}, status=True)
        except ApiError as exc:
            if exc.status != 404:  # gone meanwhile: nothing to report on
                raise

    async def _write_statuses(
        self,
        gc_obj: Obj,
        classes: Sequence[Obj],
        gateways: Sequence[Obj],
        routes: Sequence[Obj],
        result: RenderResult,
        programmed: Condition,
    ) -> None:
        now = self.now()
        old = _status(gc_obj)
        conditions = to_k8s(
            [*result.gatewayconfig, programmed], old.get("conditions"), generation(gc_obj), now
        )
        await self._patch_status(GATEWAYCONFIGS, gc_obj, {"conditions": conditions})
        accepted = ok(cond.ACCEPTED, f"parameters: GatewayConfig {name_of(key(gc_obj))}")
        for gwc in classes:
            status = {
                "conditions": to_k8s(
                    [accepted], _status(gwc).get("conditions"), generation(gwc), now
                )
            }
            await self._patch_status(GATEWAYCLASSES, gwc, status)
        for gw in gateways:
            gs = result.gateways.get(key(gw))
            if gs is not None:
                await self._patch_status(GATEWAYS, gw, gateway_status(gw, gs, now))
        for route in routes:
            parents = result.routes.get(key(route))
            if parents is not None:
                await self._patch_status(UDPROUTES, route, route_status(route, parents, now))

    async def _release_routes(self, previous: frozenset[Member], gc: ObjKey) -> None:
        """Drop our parent entries from routes that no longer attach to this config's Gateways."""
        now_members = self.members(gc)
        old_gateways = {(m[1], m[2]) for m in previous if m[0] == "Gateway"}
        for kind, ns, name in sorted(previous - now_members):
            if kind != "UDPRoute":
                continue
            route = await self.api.get(UDPROUTES, ns, name)
            if route is None:
                continue
            parents = _status(route).get("parents") or []
            kept = [p for p in parents if not _our_parent_of(p, (ns, name), old_gateways)]
            if len(kept) != len(parents):
                await self._patch_status(UDPROUTES, route, {"parents": kept})

    # ----------------------------------------------------------------------------------------

    async def report_class(self, gatewayclass: Obj) -> None:
        """A GatewayClass of ours whose parameters are unusable gets Accepted=False here,
        since no GatewayConfig reconcile will visit it."""
        if not is_ours(gatewayclass):
            return
        params = parameters_of(gatewayclass, self.default_namespace)
        if not isinstance(params, str):
            if await self.api.get(GATEWAYCONFIGS, *params) is not None:
                return  # that GatewayConfig's reconcile reports on the class
            params = f"GatewayConfig {name_of(params)} not found"
        condition = Condition(cond.ACCEPTED, False, cond.INVALID_PARAMETERS, params)
        status = {"conditions": _conditions(gatewayclass, [condition], self.now())}
        await self._patch_status(GATEWAYCLASSES, gatewayclass, status)


def _status(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, Mapping) else {}


def _conditions(obj: Obj, new: Sequence[Condition], now: str) -> list[dict[str, Any]]:
    return to_k8s(new, _status(obj).get("conditions"), generation(obj), now)


def gateway_status(gateway: Obj, gs: GatewayStatus, now: str) -> dict[str, Any]:
    gen = generation(gateway)
    old = _status(gateway).get("listeners") or []
    old_listeners = {str(i.get("name")): i for i in old if isinstance(i, Mapping)}
    return {
        "conditions": _conditions(gateway, gs.conditions, now),
        "listeners": [
            {
                "name": ls.name,
                "supportedKinds": [dict(k) for k in ls.supported_kinds],
                "attachedRoutes": ls.attached_routes,
                "conditions": to_k8s(
                    ls.conditions, old_listeners.get(ls.name, {}).get("conditions"), gen, now
                ),
            }
            for ls in gs.listeners
        ],
    }


def _our_parent_of(entry: object, route: ObjKey, gateways: set[ObjKey]) -> bool:
    if not isinstance(entry, Mapping) or entry.get("controllerName") != c.CONTROLLER_NAME:
        return False
    ref = entry.get("parentRef")
    if not isinstance(ref, Mapping):
        return False
    return (str(ref.get("namespace") or route[0]), str(ref.get("name"))) in gateways


def route_status(route: Obj, parents: Sequence[ParentStatus], now: str) -> dict[str, Any]:
    """Our parent entries replace our old ones; other controllers' entries stay."""
    gen = generation(route)
    old = [p for p in _status(route).get("parents") or [] if isinstance(p, Mapping)]
    ours = [p for p in old if p.get("controllerName") == c.CONTROLLER_NAME]
    others = [dict(p) for p in old if p.get("controllerName") != c.CONTROLLER_NAME]
    entries = []
    for parent in parents:
        before = next((p for p in ours if p.get("parentRef") == parent.parent_ref), {})
        entries.append(
            {
                "parentRef": dict(parent.parent_ref),
                "controllerName": c.CONTROLLER_NAME,
                "conditions": to_k8s(parent.conditions, before.get("conditions"), gen, now),
            }
        )
    return {"parents": [*others, *entries]}
