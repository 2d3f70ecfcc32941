"""The config sections: decoded YAML/JSON in, a validated `StunnerConfig` with defaults out.

Unlike upstream, unknown keys are errors: a typo such as ``metric_endpoint`` must not silently
turn monitoring off.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from stunner import constants as c

from .fields import (
    check_unique,
    choice,
    excerpt,
    get_int,
    get_port,
    get_str,
    get_str_list,
    is_host,
    join,
    section,
    typename,
)
from .http import parse_http_endpoint
from .loglevel import parse_loglevel
from .model import (
    AdminConfig,
    AuthConfig,
    AuthType,
    ClusterConfig,
    ClusterType,
    ConfigError,
    LimitsConfig,
    ListenerConfig,
    ListenerProtocol,
    StunnerConfig,
)

_T = TypeVar("_T")

AUTH_TYPES: Mapping[str, AuthType] = {
    "plaintext": "plaintext",
    "static": "plaintext",
    "longterm": "longterm",
    "ephemeral": "longterm",
    "timewindowed": "longterm",
}
LISTENER_PROTOCOLS: Mapping[str, ListenerProtocol] = {
    "udp": "UDP",
    "tcp": "TCP",
    "tls": "TLS",
    "dtls": "DTLS",
    "turn-udp": "UDP",
    "turn-tcp": "TCP",
    "turn-tls": "TLS",
    "turn-dtls": "DTLS",
}
_CLUSTER_TYPES: Mapping[str, ClusterType] = {"static": "STATIC", "strict_dns": "STRICT_DNS"}
_CLUSTER_PROTOCOLS: Mapping[str, str] = {"udp": "udp", "tcp": "tcp"}

_ADMIN_KEYS = (
    "name",
    "loglevel",
    "metrics_endpoint",
    "healthcheck_endpoint",
    "user_quota",
    "limits",
)
# (field, lowest, highest) of each integer limit; 0 is allowed where it means "no limit".
LIMIT_RANGES: Mapping[str, tuple[int, int]] = {
    "allocations_total": (0, 10_000_000),
    "allocations_per_listener": (0, 10_000_000),
    "permissions_per_allocation": (0, 65536),
    "channels_per_allocation": (0, 4096),
    "nonce_lifetime": (10, 86400),
    "max_allocation_lifetime": (1, 86400),
    "tcp_connections_per_source": (0, 1_000_000),
    "tcp_idle_timeout": (0, 86400),
    "tls_handshake_timeout": (1, 600),
    "max_message_size": (548, 65539),
    "stream_write_buffer": (16384, 67_108_864),
}
LIMIT_FIELDS = (*LIMIT_RANGES, "udp_amplification_guard")  # every LimitsConfig field
_AUTH_KEYS = ("type", "realm", "credentials")
_CREDENTIAL_KEYS = ("username", "password", "secret")
_LISTENER_KEYS = (
    "name",
    "protocol",
    "address",
    "port",
    "public_address",
    "public_port",
    "min_relay_port",
    "max_relay_port",
    "cert",
    "key",
    "routes",
)
# Upstream's v0.14 example stunnerd.conf spells the relay port range like this.
_LEGACY_LISTENER_KEYS = {"min_port": "min_relay_port", "max_port": "max_relay_port"}
_CLUSTER_KEYS = ("name", "type", "protocol", "endpoints")
_TOP_KEYS = ("version", "admin", "auth", "listeners", "clusters")


def _limits(data: object) -> LimitsConfig:
    path = "admin.limits"
    sec = section(data, path, LIMIT_FIELDS)
    defaults = LimitsConfig()
    ints = {
        key: get_int(sec, path, key, getattr(defaults, key), low, high)
        for key, (low, high) in LIMIT_RANGES.items()
    }
    guard = sec.get("udp_amplification_guard", defaults.udp_amplification_guard)
    if not isinstance(guard, bool):
        raise ConfigError(
            f"{path}.udp_amplification_guard: must be true or false, got {excerpt(guard)}"
        )
    return LimitsConfig(**ints, udp_amplification_guard=guard)


def _admin(data: object) -> AdminConfig:
    sec = section(data, "admin", _ADMIN_KEYS)
    loglevel = get_str(sec, "admin", "loglevel", c.DEFAULT_LOGLEVEL)
    parse_loglevel(loglevel)
    metrics = get_str(sec, "admin", "metrics_endpoint")
    parse_http_endpoint(metrics, c.DEFAULT_METRICS_PORT, field="admin.metrics_endpoint")
    # Absent or null: the default endpoint; "": health checks off.
    health: str | None = c.DEFAULT_HEALTHCHECK_ENDPOINT
    if sec.get("healthcheck_endpoint") is not None:
        health = get_str(sec, "admin", "healthcheck_endpoint") or None
        field = "admin.healthcheck_endpoint"
        parse_http_endpoint(health or "", c.DEFAULT_HEALTH_PORT, field=field)
    return AdminConfig(
        name=get_str(sec, "admin", "name", c.DEFAULT_STUNNERD_NAME),
        loglevel=loglevel,
        metrics_endpoint=metrics,
        healthcheck_endpoint=health,
        user_quota=get_int(sec, "admin", "user_quota", 0, 0, 10_000_000),
        limits=_limits(sec.get("limits")),
    )


def _auth(data: object) -> AuthConfig:
    sec = section(data, "auth", _AUTH_KEYS)
    raw_type = get_str(sec, "auth", "type", "plaintext")
    expected = "type (plaintext, static, longterm, ephemeral or timewindowed)"
    atype = choice(raw_type, "auth.type", AUTH_TYPES, expected)
    creds = section(sec.get("credentials"), "auth.credentials", _CREDENTIAL_KEYS)
    values = {k: get_str(creds, "auth.credentials", k) for k in _CREDENTIAL_KEYS}
    needed = ("username", "password") if atype == "plaintext" else ("secret",)
    for key in needed:
        if not values[key]:
            raise ConfigError(f"auth.credentials.{key}: required for {atype} auth")
    used = {k: (v if k in needed else "") for k, v in values.items()}
    return AuthConfig(
        type=atype,
        realm=get_str(sec, "auth", "realm", c.DEFAULT_REALM),
        **used,
    )


def _pem(sec: Mapping[str, Any], path: str, key: str, protocol: str) -> bytes:
    where = join(path, key)
    text = "".join(get_str(sec, path, key).split())  # base64 may be wrapped over lines
    if not text:
        if protocol in ("TLS", "DTLS"):
            raise ConfigError(f"{where}: required for {protocol} listener")
        return b""
    try:
        pem = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(f"{where}: must be base64-encoded PEM, got invalid base64") from None
    if b"-----BEGIN " not in pem or b"-----END " not in pem:
        raise ConfigError(f"{where}: must be base64-encoded PEM, got no PEM block")
    return pem


def _unalias_listener(data: object, path: str) -> object:
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for old, new in _LEGACY_LISTENER_KEYS.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{path}.{old}: conflicts with {new}")
            out[new] = out.pop(old)
    return out


def _listener(data: object, path: str) -> ListenerConfig:
    sec = section(_unalias_listener(data, path), path, _LISTENER_KEYS)
    name = get_str(sec, path, "name")
    if not name:
        raise ConfigError(f"{path}.name: required")
    raw_proto = get_str(sec, path, "protocol", "UDP")
    expected = "protocol (UDP, TCP, TLS, DTLS or TURN-UDP, TURN-TCP, TURN-TLS, TURN-DTLS)"
    protocol = choice(raw_proto, f"{path}.protocol", LISTENER_PROTOCOLS, expected)
    address = get_str(sec, path, "address", "0.0.0.0")
    public_address = get_str(sec, path, "public_address")
    for key, host in (("address", address), ("public_address", public_address)):
        if host and not is_host(host):
            raise ConfigError(
                f"{path}.{key}: must be an IP address or host name, got {excerpt(host)}"
            )
    min_port = get_port(sec, path, "min_relay_port", c.DEFAULT_MIN_RELAY_PORT)
    max_port = get_port(sec, path, "max_relay_port", c.DEFAULT_MAX_RELAY_PORT)
    if min_port > max_port:
        raise ConfigError(
            f"{path}.min_relay_port: must be <= max_relay_port, got {min_port} > {max_port}"
        )
    return ListenerConfig(
        name=name,
        protocol=protocol,
        address=address,
        port=get_port(sec, path, "port", c.DEFAULT_PORT),
        public_address=public_address,
        public_port=get_port(sec, path, "public_port", 0, low=0),
        min_relay_port=min_port,
        max_relay_port=max_port,
        cert=_pem(sec, path, "cert", protocol),
        key=_pem(sec, path, "key", protocol),
        routes=tuple(sorted(set(get_str_list(sec, path, "routes")))),
    )


def _static_endpoint_ok(endpoint: str) -> bool:
    try:
        ipaddress.ip_network(endpoint, strict=False)
    except ValueError:
        return False
    return True


def _cluster(data: object, path: str) -> ClusterConfig:
    sec = section(data, path, _CLUSTER_KEYS)
    name = get_str(sec, path, "name")
    if not name:
        raise ConfigError(f"{path}.name: required")
    raw_type = get_str(sec, path, "type", "STATIC")
    ctype = choice(raw_type, f"{path}.type", _CLUSTER_TYPES, "type (STATIC or STRICT_DNS)")
    raw_proto = get_str(sec, path, "protocol", "udp")
    protocol = choice(raw_proto, f"{path}.protocol", _CLUSTER_PROTOCOLS, "protocol (udp or tcp)")
    endpoints = get_str_list(sec, path, "endpoints")
    check, what = (
        (_static_endpoint_ok, "an IP address or CIDR")
        if ctype == "STATIC"
        else (is_host, "a host name")
    )
    for i, endpoint in enumerate(endpoints):
        if not check(endpoint):
            raise ConfigError(f"{path}.endpoints[{i}]: must be {what}, got {excerpt(endpoint)}")
    return ClusterConfig(
        name=name,
        type=ctype,
        protocol=protocol,
        endpoints=tuple(sorted(set(endpoints))),
    )


def _items(data: Mapping[str, Any], key: str, build: Callable[[object, str], _T]) -> tuple[_T, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list, got {typename(value)}")
    return tuple(build(item, f"{key}[{i}]") for i, item in enumerate(value))


def from_dict(data: Mapping[str, Any]) -> StunnerConfig:
    """Validate a decoded config and fill in the defaults."""
    top = section(data, "", _TOP_KEYS)
    version = top.get("version")
    if version is None:
        raise ConfigError(f"version: missing, expected {c.API_VERSION}")
    if version != c.API_VERSION:
        raise ConfigError(f"version: unsupported {excerpt(version)}, expected {c.API_VERSION}")
    admin = _admin(top.get("admin"))
    auth = _auth(top.get("auth"))
    listeners = _items(top, "listeners", _listener)
    clusters = _items(top, "clusters", _cluster)
    check_unique((lis.name for lis in listeners), "listeners")
    check_unique((cl.name for cl in clusters), "clusters")
    return StunnerConfig(c.API_VERSION, admin, auth, listeners, clusters)


def warnings(config: StunnerConfig) -> list[str]:
    """Legal but probably unintended settings, for the daemon to log."""
    out: list[str] = []
    names = {cl.name for cl in config.clusters}
    for i, lis in enumerate(config.listeners):
        for route in lis.routes:
            if route not in names:
                out.append(f"listeners[{i}].routes: no cluster named {excerpt(route)} (yet)")
    seen: dict[tuple[str, str, int], int] = {}
    for i, lis in enumerate(config.listeners):
        family = "udp" if lis.protocol in ("UDP", "DTLS") else "tcp"
        j = seen.setdefault((family, lis.address, lis.port), i)
        if j != i:
            out.append(
                f"listeners[{i}]: {family} {lis.address}:{lis.port} also used by listeners[{j}]"
            )
    metrics = parse_http_endpoint(config.admin.metrics_endpoint, c.DEFAULT_METRICS_PORT)
    health = parse_http_endpoint(config.admin.healthcheck_endpoint or "", c.DEFAULT_HEALTH_PORT)
    if metrics and health and metrics.port == health.port:
        out.append(f"admin: metrics and health check endpoints share port {metrics.port}")
    return out
