"""Render a GatewayConfig, its Gateways and UDPRoutes into one stunnerd config (docs/kubernetes.md).

Pure: Kubernetes objects (decoded JSON) in, the typed stunnerd config (`StunnerConfig`) and
the status to report out. The operator and ``stunnerctl render`` both call `render` and write
`dump_config` of its config; neither adds rules of its own.

Names: listener ``<gateway-ns>/<gateway>/<listener>``, cluster ``<route-ns>/<route>``. Every
listener binds ``$STUNNER_ADDR``, which stunnerd expands from the pod's environment.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stunner import constants as c
from stunner.config import (
    AdminConfig,
    AuthConfig,
    ClusterConfig,
    ConfigError,
    ListenerConfig,
    ListenerProtocol,
    StunnerConfig,
    dumps,
    expand_env,
    loads,
)
from stunner.config.sections import AUTH_TYPES, LISTENER_PROTOCOLS

from . import conditions as cond
from .conditions import Condition, ok
from .resources import GATEWAY_GROUP, Obj, ObjKey, key, name_of, spec
from .spec import GatewayConfigSpec, SpecError, parse_spec

LISTENER_ADDRESS = "$STUNNER_ADDR"
ROUTE_KIND = "UDPRoute"
_ROUTE_GK = (GATEWAY_GROUP, ROUTE_KIND)
SUPPORTED_KINDS: tuple[Mapping[str, str], ...] = ({"group": GATEWAY_GROUP, "kind": ROUTE_KIND},)

_TRANSPORT = {"UDP": "udp", "DTLS": "udp", "TCP": "tcp", "TLS": "tcp"}
_MISSING = "not found or not readable"
_SPEC_FIELD = {"username": "userName", "password": "password", "secret": "sharedSecret"}


@dataclass(frozen=True, slots=True)
class RenderInput:
    """The objects one GatewayConfig's config depends on. Gateways are taken as ours (the
    operator has already matched their GatewayClass); routes that do not attach are ignored."""

    gatewayconfig: Obj
    gateways: Sequence[Obj] = ()
    routes: Sequence[Obj] = ()
    services: Sequence[Obj] = ()
    endpoints: Sequence[Obj] = ()
    secrets: Sequence[Obj] = ()


@dataclass(frozen=True, slots=True)
class ListenerStatus:
    name: str
    supported_kinds: tuple[Mapping[str, str], ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@dataclass(frozen=True, slots=True)
class ParentStatus:
    parent_ref: Mapping[str, Any]  # as written in the route
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class RenderResult:
    config: StunnerConfig | None  # None: the GatewayConfig was rejected, see `error`
    error: str | None
    configmap: ObjKey
    gatewayconfig: tuple[Condition, ...]
    gateways: Mapping[ObjKey, GatewayStatus]
    routes: Mapping[ObjKey, tuple[ParentStatus, ...]]


_ACCEPTED = ok(cond.ACCEPTED)
_NOT_CONFLICTED = Condition(cond.CONFLICTED, False, cond.NO_CONFLICTS)
_RESOLVED = ok(cond.RESOLVED_REFS)


@dataclass(slots=True)
class _Listener:
    """One Gateway listener while it is being analysed."""

    gateway: ObjKey
    name: str
    spec: Mapping[str, Any]
    protocol: ListenerProtocol = "UDP"  # meaningful once `accepted`
    port: int = 0
    cert: bytes = b""  # PEM
    key: bytes = b""
    accepted: Condition = _ACCEPTED
    conflicted: Condition = _NOT_CONFLICTED
    resolved: Condition = _RESOLVED
    kinds: tuple[Mapping[str, str], ...] = SUPPORTED_KINDS
    routes: set[str] = field(default_factory=set)

    @property
    def usable(self) -> bool:
        return self.accepted.status and not self.conflicted.status and self.resolved.status

    @property
    def full_name(self) -> str:
        return f"{name_of(self.gateway)}/{self.name}"


def _index(objs: Iterable[Obj]) -> dict[ObjKey, Obj]:
    return {key(o): o for o in objs}


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def secret_value(secret: Obj, name: str) -> str | None:
    """A Secret value as text: ``data`` is base64 (as the API serves it), ``stringData`` is
    plain (as a manifest may hold it)."""
    plain = secret.get("stringData")
    if isinstance(plain, Mapping) and isinstance(plain.get(name), str):
        return str(plain[name])
    data = secret.get("data")
    if isinstance(data, Mapping) and isinstance(data.get(name), str):
        try:
            return base64.b64decode(data[name], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def _pem(secret: Obj, name: str) -> bytes | None:
    """A PEM Secret value; None if missing or not PEM."""
    text = secret_value(secret, name)
    if text is None or "-----BEGIN " not in text or "-----END " not in text:
        return None
    return text.encode()


# --------------------------------------------------------------------------------------------
# GatewayConfig -> admin, auth


def _auth(sp: GatewayConfigSpec, secrets: Mapping[ObjKey, Obj]) -> AuthConfig:
    atype = AUTH_TYPES[sp.auth_type.lower()]  # parse_spec admits plaintext or longterm only
    user, password, secret = sp.username, sp.password, sp.shared_secret
    if sp.auth_ref is not None:
        ref = (sp.auth_ref.namespace, sp.auth_ref.name)
        obj = secrets.get(ref)
        if obj is None:
            raise SpecError(f"spec.authRef: Secret {name_of(ref)} {_MISSING}")
        raw = secret_value(obj, "type") or atype
        if raw.lower() not in AUTH_TYPES:
            raise SpecError(f"spec.authRef: Secret {name_of(ref)}: unknown type {raw!r}")
        atype = AUTH_TYPES[raw.lower()]
        user = secret_value(obj, "username") or ""
        password = secret_value(obj, "password") or ""
        secret = secret_value(obj, "secret") or secret_value(obj, "sharedSecret") or ""
        needed = (user and password) if atype == "plaintext" else secret
        if not needed:
            what = "username and password" if atype == "plaintext" else "secret or sharedSecret"
            raise SpecError(f"spec.authRef: Secret {name_of(ref)} needs {what} for {atype}")
    creds = {"username": user, "password": password} if atype == "plaintext" else {"secret": secret}
    for name, value in creds.items():
        # stunnerd expands $VAR over the whole file, so "pa$word" would arrive as "pa".
        if expand_env(value, {}) != value:
            where = "spec.authRef" if sp.auth_ref is not None else f"spec.{_SPEC_FIELD[name]}"
            raise SpecError(
                f"{where}: the {name} contains '$' before a name or '{{', which "
                "stunnerd would expand from its environment"
            )
    return AuthConfig(type=atype, realm=sp.realm, **creds)


def _admin(sp: GatewayConfigSpec, gc: ObjKey) -> AdminConfig:
    return AdminConfig(
        name=name_of(gc),
        loglevel=sp.loglevel,
        metrics_endpoint=sp.metrics_endpoint or "",  # verbatim, as the spec asks
        healthcheck_endpoint=sp.healthcheck_endpoint or None,
    )


# --------------------------------------------------------------------------------------------
# Gateways -> listeners


def _certificate(lis: _Listener, gw_ns: str, secrets: Mapping[ObjKey, Obj]) -> None:
    tls = lis.spec.get("tls")
    if not isinstance(tls, Mapping):
        tls = {}
    if tls.get("mode", "Terminate") != "Terminate":
        lis.accepted = Condition(
            cond.ACCEPTED, False, cond.UNSUPPORTED_VALUE, "only tls.mode Terminate is supported"
        )
        return
    refs = _list(tls.get("certificateRefs"))
    if not refs:
        lis.resolved = Condition(
            cond.RESOLVED_REFS, False, cond.INVALID_CERTIFICATE_REF, "tls.certificateRefs missing"
        )
        return
    ref = refs[0]
    where = (str(ref.get("namespace") or gw_ns), str(ref.get("name") or ""))
    problem = ""
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Secret") != "Secret":
        problem = "only core Secrets can be certificateRefs"
    elif (secret := secrets.get(where)) is None:
        problem = f"Secret {name_of(where)} {_MISSING}"
    else:
        crt, pem_key = _pem(secret, "tls.crt"), _pem(secret, "tls.key")
        if crt is None or pem_key is None:
            problem = f"Secret {name_of(where)} needs PEM tls.crt and tls.key"
        else:
            lis.cert, lis.key = crt, pem_key
    if problem:
        lis.resolved = Condition(cond.RESOLVED_REFS, False, cond.INVALID_CERTIFICATE_REF, problem)


def _route_kinds(lis: _Listener) -> None:
    allowed = lis.spec.get("allowedRoutes")
    kinds = _list(allowed.get("kinds")) if isinstance(allowed, Mapping) else []
    if not kinds:
        return
    ours = [k for k in kinds if (k.get("group", GATEWAY_GROUP), k.get("kind")) == _ROUTE_GK]
    if len(ours) != len(kinds):
        others = sorted({str(k.get("kind")) for k in kinds} - {ROUTE_KIND})
        lis.resolved = Condition(
            cond.RESOLVED_REFS,
            False,
            cond.INVALID_ROUTE_KINDS,
            f"unsupported route kinds {', '.join(others)}; only {ROUTE_KIND} is",
        )
    lis.kinds = SUPPORTED_KINDS if ours else ()


def _listener(gateway: Obj, item: Mapping[str, Any], secrets: Mapping[ObjKey, Obj]) -> _Listener:
    lis = _Listener(gateway=key(gateway), name=str(item.get("name") or ""), spec=item)
    # Gateway API protocol names and upstream STUNner's TURN-* spellings, as stunnerd reads them.
    protocol = LISTENER_PROTOCOLS.get(str(item.get("protocol") or "").lower())
    port = item.get("port")
    if protocol is None:
        lis.accepted = Condition(
            cond.ACCEPTED,
            False,
            cond.UNSUPPORTED_PROTOCOL,
            f"protocol {item.get('protocol')!r} is not one of UDP, TCP, TLS, DTLS",
        )
        lis.kinds = ()
        return lis
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        lis.accepted = Condition(
            cond.ACCEPTED, False, cond.UNSUPPORTED_VALUE, f"port must be 1-65535, got {port!r}"
        )
        return lis
    lis.protocol, lis.port = protocol, port
    if protocol in ("TLS", "DTLS"):
        _certificate(lis, key(gateway)[0], secrets)
    _route_kinds(lis)
    return lis


def _mark_conflicts(listeners: Sequence[_Listener]) -> None:
    """All listeners share one stunnerd, so two on the same transport port cannot both bind."""
    taken: dict[tuple[str, int], _Listener] = {}
    for lis in listeners:
        if not lis.usable:
            continue
        slot = (_TRANSPORT[lis.protocol], lis.port)
        first = taken.setdefault(slot, lis)
        if first is not lis:
            message = f"{slot[0]} port {slot[1]} is already used by listener {first.full_name}"
            lis.accepted = Condition(cond.ACCEPTED, False, cond.PORT_UNAVAILABLE, message)
            lis.conflicted = Condition(cond.CONFLICTED, True, cond.PROTOCOL_CONFLICT, message)


def _public_address(gateway: Obj) -> str:
    """The first IPAddress in spec.addresses (other types and malformed values are skipped)."""
    for addr in _list(spec(gateway).get("addresses")):
        if addr.get("type", "IPAddress") != "IPAddress":
            continue
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(str(addr.get("value"))))
    return ""


def _listener_config(lis: _Listener, sp: GatewayConfigSpec, public: str) -> ListenerConfig:
    return ListenerConfig(
        name=lis.full_name,
        protocol=lis.protocol,
        address=LISTENER_ADDRESS,
        port=lis.port,
        public_address=public,
        public_port=lis.port if public else 0,
        min_relay_port=sp.min_port,
        max_relay_port=sp.max_port,
        cert=lis.cert,
        key=lis.key,
        routes=tuple(sorted(lis.routes)),
    )


# --------------------------------------------------------------------------------------------
# UDPRoutes -> clusters, attachment


def _backends(
    route: Obj, services: Mapping[ObjKey, Obj], endpoints: Mapping[ObjKey, Obj]
) -> tuple[list[str], Condition]:
    """The cluster's endpoints: each backend Service's ClusterIP(s) and ready endpoint IPs.
    Ports are ignored: stunnerd admits peers by IP (docs/security.md)."""
    ns = key(route)[0]
    ips: list[str] = []
    problems: list[tuple[str, str]] = []
    for rule in _list(spec(route).get("rules")):
        for ref in _list(rule.get("backendRefs")):
            where = (str(ref.get("namespace") or ns), str(ref.get("name") or ""))
            if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
                kind = f"{ref.get('group') or 'core'}/{ref.get('kind')}"
                problems.append((cond.INVALID_KIND, f"{kind} {where[1]}: only Services"))
                continue
            svc = services.get(where)
            if svc is None:
                problems.append((cond.BACKEND_NOT_FOUND, f"Service {name_of(where)} not found"))
                continue
            svc_spec = spec(svc)
            if svc_spec.get("type") == "ExternalName":
                problems.append(
                    (cond.BACKEND_NOT_FOUND, f"Service {name_of(where)}: ExternalName unsupported")
                )
                continue
            cluster_ips = svc_spec.get("clusterIPs") or [svc_spec.get("clusterIP")]
            ips += [ip for ip in cluster_ips if isinstance(ip, str) and ip not in ("", "None")]
            eps = endpoints.get(where, {})
            for subset in _list(eps.get("subsets")):
                ips += [str(a["ip"]) for a in _list(subset.get("addresses")) if a.get("ip")]
    if not problems:
        return ips, ok(cond.RESOLVED_REFS)
    reasons = {r for r, _ in problems}
    reason = cond.INVALID_KIND if cond.INVALID_KIND in reasons else cond.BACKEND_NOT_FOUND
    message = "; ".join(m for _, m in problems)
    return ips, Condition(cond.RESOLVED_REFS, False, reason, message)


def _parent_gateway(route_ns: str, ref: Mapping[str, Any]) -> ObjKey | None:
    if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or ref.get("kind", "Gateway") != "Gateway":
        return None
    return (str(ref.get("namespace") or route_ns), str(ref.get("name") or ""))


def _allows(lis: _Listener, route_ns: str) -> bool:
    if not lis.usable or not lis.kinds:
        return False
    allowed = lis.spec.get("allowedRoutes")
    namespaces = allowed.get("namespaces") if isinstance(allowed, Mapping) else None
    origin = namespaces.get("from", "Same") if isinstance(namespaces, Mapping) else "Same"
    return origin == "All" or (origin == "Same" and route_ns == lis.gateway[0])


def _attach(
    route: Obj, ref: Mapping[str, Any], listeners: Sequence[_Listener]
) -> tuple[Condition, list[_Listener]]:
    section, port = ref.get("sectionName"), ref.get("port")
    matching = [
        lis
        for lis in listeners
        if (section is None or lis.name == section) and (port is None or lis.port == port)
    ]
    if not matching:
        message = f"no listener matches sectionName={section!r} port={port!r}"
        return Condition(cond.ACCEPTED, False, cond.NO_MATCHING_PARENT, message), []
    allowed = [lis for lis in matching if _allows(lis, key(route)[0])]
    if not allowed:
        message = "no matching listener is usable and admits UDPRoutes from this namespace"
        return Condition(cond.ACCEPTED, False, cond.NOT_ALLOWED_BY_LISTENERS, message), []
    return ok(cond.ACCEPTED), allowed


# --------------------------------------------------------------------------------------------


def dump_config(config: StunnerConfig) -> str:
    """The stunnerd config text the ConfigMap holds and ``stunnerctl render`` prints."""
    return dumps(config)


def check_config(config: StunnerConfig) -> None:
    """Raise `ConfigError` unless stunnerd would load the text we write (with $STUNNER_ADDR
    set): the typed config cannot hold an unknown field, but it can hold a value stunnerd
    refuses (a Service's clusterIP that is not an IP, two listeners of the same name)."""
    loads(expand_env(dump_config(config), {"STUNNER_ADDR": "0.0.0.0"}), source="stunnerd.conf")


def _spec_and_auth(
    gatewayconfig: Obj, secrets: Mapping[ObjKey, Obj]
) -> tuple[GatewayConfigSpec, AuthConfig, str | None]:
    """The spec and auth section, or defaults and why the GatewayConfig is rejected."""
    try:
        sp = parse_spec(gatewayconfig)
        return sp, _auth(sp, secrets), None
    except SpecError as exc:
        spec_defaults = GatewayConfigSpec(stunner_config=_configmap_name(gatewayconfig))
        return spec_defaults, AuthConfig(), str(exc)


def _routes(
    routes: Sequence[Obj],
    by_gateway: Mapping[ObjKey, Sequence[_Listener]],
    services: Mapping[ObjKey, Obj],
    endpoints: Mapping[ObjKey, Obj],
) -> tuple[list[ClusterConfig], dict[ObjKey, tuple[ParentStatus, ...]]]:
    """Attach each route to our listeners (recorded on the listeners); its cluster if any."""
    clusters: list[ClusterConfig] = []
    statuses: dict[ObjKey, tuple[ParentStatus, ...]] = {}
    for route in sorted(routes, key=key):
        ips, resolved = _backends(route, services, endpoints)
        parents: list[ParentStatus] = []
        attached = False
        for ref in _list(spec(route).get("parentRefs")):
            gw = _parent_gateway(key(route)[0], ref)
            if gw is None or gw not in by_gateway:
                continue  # another controller's parent
            accepted, listeners = _attach(route, ref, by_gateway[gw])
            for lis in listeners:
                lis.routes.add(name_of(key(route)))
            attached = attached or bool(listeners)
            parents.append(ParentStatus(ref, (accepted, resolved)))
        if parents:
            statuses[key(route)] = tuple(parents)
        if attached:
            name = name_of(key(route))
            clusters.append(ClusterConfig(name=name, endpoints=tuple(sorted(set(ips)))))
    return clusters, statuses


def render(inp: RenderInput) -> RenderResult:
    gc = key(inp.gatewayconfig)
    secrets = _index(inp.secrets)
    sp, auth, error = _spec_and_auth(inp.gatewayconfig, secrets)
    configmap = (gc[0], sp.stunner_config)
    gateways = sorted(inp.gateways, key=key)
    by_gateway = {
        key(gw): [_listener(gw, item, secrets) for item in _list(spec(gw).get("listeners"))]
        for gw in gateways
    }
    _mark_conflicts([lis for group in by_gateway.values() for lis in group])
    services, endpoints = _index(inp.services), _index(inp.endpoints)
    clusters, route_status = _routes(inp.routes, by_gateway, services, endpoints)

    config: StunnerConfig | None = None
    if error is None:
        config = StunnerConfig(
            version=c.API_VERSION,
            admin=_admin(sp, gc),
            auth=auth,
            listeners=tuple(
                _listener_config(lis, sp, _public_address(gw))
                for gw in gateways
                for lis in by_gateway[key(gw)]
                if lis.usable
            ),
            clusters=tuple(clusters),
        )
        try:
            check_config(config)
        except ConfigError as exc:
            config, error = None, f"rendered config rejected by stunnerd: {exc}"

    if config is not None:
        summary = f"{len(config.listeners)} listeners, {len(clusters)} clusters"
        gc_conditions = (ok(cond.ACCEPTED, summary),)
    else:
        gc_conditions = (Condition(cond.ACCEPTED, False, cond.INVALID_PARAMETERS, error or ""),)
    return RenderResult(
        config=config,
        error=error,
        configmap=configmap,
        gatewayconfig=gc_conditions,
        gateways={k: _gateway_status(ls, gc, configmap, error) for k, ls in by_gateway.items()},
        routes=route_status,
    )


def _configmap_name(gatewayconfig: Obj) -> str:
    """The ConfigMap name even when the rest of the spec is bad, so status can name it."""
    value = spec(gatewayconfig).get("stunnerConfig")
    return value if isinstance(value, str) and value else c.CONFIGMAP_NAME


def _gateway_status(
    listeners: Sequence[_Listener], gc: ObjKey, configmap: ObjKey, error: str | None
) -> GatewayStatus:
    if error is not None:
        programmed = Condition(
            cond.PROGRAMMED, False, cond.INVALID, f"GatewayConfig {name_of(gc)}: {error}"
        )
    elif not any(lis.usable for lis in listeners):
        programmed = Condition(cond.PROGRAMMED, False, cond.INVALID, "no usable listeners")
    else:
        programmed = ok(cond.PROGRAMMED, f"rendered into ConfigMap {name_of(configmap)}")
    statuses = []
    for lis in listeners:
        if lis.usable and error is None:
            lis_programmed = ok(cond.PROGRAMMED)
        else:
            lis_programmed = Condition(cond.PROGRAMMED, False, cond.INVALID)
        statuses.append(
            ListenerStatus(
                name=lis.name,
                supported_kinds=lis.kinds,
                attached_routes=len(lis.routes),
                conditions=(lis.accepted, lis.conflicted, lis.resolved, lis_programmed),
            )
        )
    accepted = ok(cond.ACCEPTED, f"managed by GatewayConfig {name_of(gc)}")
    return GatewayStatus(conditions=(accepted, programmed), listeners=tuple(statuses))
