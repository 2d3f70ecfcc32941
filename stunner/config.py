"""The stunnerd configuration: parse, default, validate, serialise and diff.

The file format is upstream STUNner's v1alpha1 ``stunnerd.conf`` (YAML or JSON), so a config
written by the upstream operator loads here unchanged. Unlike upstream, unknown keys are errors:
a typo such as ``metric_endpoint`` must not silently turn monitoring off.

Every `ConfigError` message starts with the path of the offending field, e.g.
``listeners[1].port: must be an integer 1-65535, got 70000``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from stunner import constants as c

ListenerProtocol = Literal["UDP", "TCP", "TLS", "DTLS"]
ClusterType = Literal["STATIC", "STRICT_DNS"]
AuthType = Literal["plaintext", "longterm"]

_SECRET = "<SECRET>"


def _mask(value: str | bytes) -> str:
    return _SECRET if value else repr(value)


class ConfigError(ValueError):
    """An invalid stunnerd config; the message names the field path and the problem."""


# --------------------------------------------------------------------------------------------
# The config model. Build instances with `from_dict`/`loads`, which validate and fill defaults;
# the constructors do neither.


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Abuse limits, a stunner extension under ``admin.limits``; 0 means no limit.

    The defaults keep a public relay safe without getting in a WebRTC client's way
    (docs/security.md explains each).
    """

    allocations_total: int = 50000
    allocations_per_listener: int = 0
    permissions_per_allocation: int = 64
    channels_per_allocation: int = 64
    nonce_lifetime: int = 600
    tcp_connections_per_source: int = 128
    tcp_idle_timeout: int = 60
    tls_handshake_timeout: int = 10
    max_message_size: int = 8192
    udp_amplification_guard: bool = True
    max_allocation_lifetime: int = c.MAX_ALLOCATION_LIFETIME  # seconds; like coturn's option


@dataclass(frozen=True, slots=True)
class AdminConfig:
    name: str = c.DEFAULT_STUNNERD_NAME
    loglevel: str = c.DEFAULT_LOGLEVEL
    metrics_endpoint: str = ""  # "" = no metrics server
    healthcheck_endpoint: str | None = c.DEFAULT_HEALTHCHECK_ENDPOINT  # None = disabled
    user_quota: int = 0  # allocations per username, upstream's field; 0 = no limit
    limits: LimitsConfig = LimitsConfig()


@dataclass(frozen=True, slots=True, repr=False)
class AuthConfig:
    type: AuthType = "plaintext"
    realm: str = c.DEFAULT_REALM
    username: str = ""
    password: str = ""
    secret: str = ""

    def __repr__(self) -> str:
        return (
            f"AuthConfig(type={self.type!r}, realm={self.realm!r}, username={self.username!r}, "
            f"password={_mask(self.password)}, secret={_mask(self.secret)})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class ListenerConfig:
    name: str
    protocol: ListenerProtocol = "UDP"
    address: str = "0.0.0.0"
    port: int = c.DEFAULT_PORT
    public_address: str = ""
    public_port: int = 0
    min_relay_port: int = c.DEFAULT_MIN_RELAY_PORT
    max_relay_port: int = c.DEFAULT_MAX_RELAY_PORT
    cert: bytes = b""  # PEM
    key: bytes = b""  # PEM
    routes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"ListenerConfig(name={self.name!r}, protocol={self.protocol!r}, "
            f"address={self.address!r}, port={self.port}, "
            f"public_address={self.public_address!r}, public_port={self.public_port}, "
            f"min_relay_port={self.min_relay_port}, max_relay_port={self.max_relay_port}, "
            f"cert={_mask(self.cert)}, key={_mask(self.key)}, routes={self.routes!r})"
        )


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    type: ClusterType = "STATIC"
    protocol: str = "udp"
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StunnerConfig:
    version: str = c.API_VERSION
    admin: AdminConfig = AdminConfig()
    auth: AuthConfig = AuthConfig()
    listeners: tuple[ListenerConfig, ...] = ()
    clusters: tuple[ClusterConfig, ...] = ()

    def listener(self, name: str) -> ListenerConfig | None:
        return next((lis for lis in self.listeners if lis.name == name), None)

    def cluster(self, name: str) -> ClusterConfig | None:
        return next((cl for cl in self.clusters if cl.name == name), None)


# --------------------------------------------------------------------------------------------
# Small validators shared by the sections.

_T = TypeVar("_T")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_hostname(text: str) -> bool:
    """RFC 1123 host name syntax (a trailing dot is allowed)."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def _is_host(text: str) -> bool:
    return _is_ip(text) or _is_hostname(text)


def _typename(value: object) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _section(data: object, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """Check that `data` is a mapping with only `allowed` keys; None counts as empty."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: must be a mapping, got {_typename(data)}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{path or 'config'}: keys must be strings, got {key!r}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{_join(path, key)}: unknown field{hint}")
    return data


def _get_str(sec: Mapping[str, Any], path: str, key: str, default: str = "") -> str:
    """A string field; absent, null and "" all mean `default` (Go's zero value semantics)."""
    value = sec.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{_join(path, key)}: must be a string, got {value!r}")
    return value


def _get_port(sec: Mapping[str, Any], path: str, key: str, default: int, low: int = 1) -> int:
    """A port field; absent, null and 0 mean `default` (0 is "unset" upstream)."""
    value = sec.get(key)
    if value is None or (value == 0 and not isinstance(value, bool)):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ConfigError(f"{_join(path, key)}: must be an integer {low}-65535, got {value!r}")
    return value


def _get_str_list(sec: Mapping[str, Any], path: str, key: str) -> list[str]:
    value = sec.get(key)
    if value is None:
        return []
    where = _join(path, key)
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list of strings, got {_typename(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{where}[{i}]: must be a non-empty string, got {item!r}")
    return value


def _choice(value: str, where: str, choices: Mapping[str, _T], expected: str) -> _T:
    try:
        return choices[value.lower()]
    except KeyError:
        raise ConfigError(f"{where}: unknown {expected}, got {value!r}") from None


def _check_unique(names: Iterable[str], path: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{path}[{i}].name: duplicate name {name!r}")
        seen.add(name)


# --------------------------------------------------------------------------------------------
# Log level specs: "scope:LEVEL,scope:LEVEL", as upstream's logger factory reads them.

TRACE = logging.DEBUG - 5
DISABLE = logging.CRITICAL + 10
_LEVELS: Mapping[str, int] = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "DISABLE": DISABLE,
}


def parse_loglevel(spec: str, *, field: str = "admin.loglevel") -> dict[str, int]:
    """Map each scope to a `logging` level; "all" (always present, default INFO) is the default
    for scopes not listed. Later entries override earlier ones."""
    levels = {"all": logging.INFO}
    for entry in spec.split(","):
        scope, sep, level = (part.strip() for part in entry.partition(":"))
        if not sep or not scope or not level:
            raise ConfigError(f"{field}: expected scope:LEVEL, got {entry.strip()!r}")
        if level.upper() not in _LEVELS:
            known = ", ".join(_LEVELS)
            raise ConfigError(f"{field}: unknown level {level!r}, expected one of {known}")
        levels["all" if scope.lower() == "all" else scope] = _LEVELS[level.upper()]
    return levels


# --------------------------------------------------------------------------------------------
# HTTP endpoints (metrics, health checks).


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    host: str
    port: int
    path: str


def parse_http_endpoint(
    url: str, default_port: int, *, field: str = "endpoint"
) -> HttpEndpoint | None:
    """Parse ``http://[host][:port][/path]``; "" means disabled (None). An empty host means
    0.0.0.0, an empty port `default_port`, an empty path "/"."""
    if url == "":
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{field}: invalid http:// URL, got {url!r}") from None
    if parts.scheme.lower() != "http" or not url.lower().startswith("http://"):
        raise ConfigError(f"{field}: must be an http:// URL, got {url!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{field}: user info, query and fragment not allowed, got {url!r}")
    host = parts.hostname or "0.0.0.0"
    if not _is_host(host):
        raise ConfigError(f"{field}: invalid host {host!r} in {url!r}")
    if port == 0:
        raise ConfigError(f"{field}: port must be 1-65535, got {url!r}")
    return HttpEndpoint(host=host, port=port or default_port, path=parts.path or "/")


# --------------------------------------------------------------------------------------------
# Sections.

_AUTH_TYPES: Mapping[str, AuthType] = {
    "plaintext": "plaintext",
    "static": "plaintext",
    "longterm": "longterm",
    "ephemeral": "longterm",
    "timewindowed": "longterm",
}
_LISTENER_PROTOCOLS: Mapping[str, ListenerProtocol] = {
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
_LIMIT_RANGES: Mapping[str, tuple[int, int]] = {
    "allocations_total": (0, 10_000_000),
    "allocations_per_listener": (0, 10_000_000),
    "permissions_per_allocation": (0, 65536),
    "channels_per_allocation": (0, 4096),
    "nonce_lifetime": (10, 86400),
    "tcp_connections_per_source": (0, 1_000_000),
    "tcp_idle_timeout": (0, 86400),
    "tls_handshake_timeout": (1, 600),
    "max_message_size": (548, 65539),
    "max_allocation_lifetime": (1, 86400),
}
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


def _get_int(sec: Mapping[str, Any], path: str, key: str, default: int, low: int, high: int) -> int:
    value = sec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{_join(path, key)}: must be an integer {low}-{high}, got {value!r}")
    return value


def _limits(data: object) -> LimitsConfig:
    path = "admin.limits"
    keys = (*_LIMIT_RANGES, "udp_amplification_guard")
    sec = _section(data, path, keys)
    defaults = LimitsConfig()
    ints = {
        key: _get_int(sec, path, key, getattr(defaults, key), low, high)
        for key, (low, high) in _LIMIT_RANGES.items()
    }
    guard = sec.get("udp_amplification_guard", defaults.udp_amplification_guard)
    if not isinstance(guard, bool):
        raise ConfigError(f"{path}.udp_amplification_guard: must be true or false, got {guard!r}")
    return LimitsConfig(**ints, udp_amplification_guard=guard)


def _limits_dict(limits: LimitsConfig) -> dict[str, Any]:
    """Only the limits that differ from the defaults, so rendered configs stay upstream-like."""
    defaults = LimitsConfig()
    return {
        key: getattr(limits, key)
        for key in (*_LIMIT_RANGES, "udp_amplification_guard")
        if getattr(limits, key) != getattr(defaults, key)
    }


def _admin(data: object) -> AdminConfig:
    sec = _section(data, "admin", _ADMIN_KEYS)
    loglevel = _get_str(sec, "admin", "loglevel", c.DEFAULT_LOGLEVEL)
    parse_loglevel(loglevel)
    metrics = _get_str(sec, "admin", "metrics_endpoint")
    parse_http_endpoint(metrics, c.DEFAULT_METRICS_PORT, field="admin.metrics_endpoint")
    # Absent or null: the default endpoint; "": health checks off.
    health: str | None = c.DEFAULT_HEALTHCHECK_ENDPOINT
    if sec.get("healthcheck_endpoint") is not None:
        health = _get_str(sec, "admin", "healthcheck_endpoint") or None
        field = "admin.healthcheck_endpoint"
        parse_http_endpoint(health or "", c.DEFAULT_HEALTH_PORT, field=field)
    return AdminConfig(
        name=_get_str(sec, "admin", "name", c.DEFAULT_STUNNERD_NAME),
        loglevel=loglevel,
        metrics_endpoint=metrics,
        healthcheck_endpoint=health,
        user_quota=_get_int(sec, "admin", "user_quota", 0, 0, 10_000_000),
        limits=_limits(sec.get("limits")),
    )


def _auth(data: object) -> AuthConfig:
    sec = _section(data, "auth", _AUTH_KEYS)
    raw_type = _get_str(sec, "auth", "type", "plaintext")
    expected = "type (plaintext, static, longterm, ephemeral or timewindowed)"
    atype = _choice(raw_type, "auth.type", _AUTH_TYPES, expected)
    creds = _section(sec.get("credentials"), "auth.credentials", _CREDENTIAL_KEYS)
    values = {k: _get_str(creds, "auth.credentials", k) for k in _CREDENTIAL_KEYS}
    needed = ("username", "password") if atype == "plaintext" else ("secret",)
    for key in needed:
        if not values[key]:
            raise ConfigError(f"auth.credentials.{key}: required for {atype} auth")
    used = {k: (v if k in needed else "") for k, v in values.items()}
    return AuthConfig(
        type=atype,
        realm=_get_str(sec, "auth", "realm", c.DEFAULT_REALM),
        **used,
    )


def _pem(sec: Mapping[str, Any], path: str, key: str, protocol: str) -> bytes:
    where = _join(path, key)
    text = "".join(_get_str(sec, path, key).split())  # base64 may be wrapped over lines
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
    sec = _section(_unalias_listener(data, path), path, _LISTENER_KEYS)
    name = _get_str(sec, path, "name")
    if not name:
        raise ConfigError(f"{path}.name: required")
    raw_proto = _get_str(sec, path, "protocol", "UDP")
    expected = "protocol (UDP, TCP, TLS, DTLS or TURN-UDP, TURN-TCP, TURN-TLS, TURN-DTLS)"
    protocol = _choice(raw_proto, f"{path}.protocol", _LISTENER_PROTOCOLS, expected)
    address = _get_str(sec, path, "address", "0.0.0.0")
    public_address = _get_str(sec, path, "public_address")
    for key, host in (("address", address), ("public_address", public_address)):
        if host and not _is_host(host):
            raise ConfigError(f"{path}.{key}: must be an IP address or host name, got {host!r}")
    min_port = _get_port(sec, path, "min_relay_port", c.DEFAULT_MIN_RELAY_PORT)
    max_port = _get_port(sec, path, "max_relay_port", c.DEFAULT_MAX_RELAY_PORT)
    if min_port > max_port:
        raise ConfigError(
            f"{path}.min_relay_port: must be <= max_relay_port, got {min_port} > {max_port}"
        )
    return ListenerConfig(
        name=name,
        protocol=protocol,
        address=address,
        port=_get_port(sec, path, "port", c.DEFAULT_PORT),
        public_address=public_address,
        public_port=_get_port(sec, path, "public_port", 0, low=0),
        min_relay_port=min_port,
        max_relay_port=max_port,
        cert=_pem(sec, path, "cert", protocol),
        key=_pem(sec, path, "key", protocol),
        routes=tuple(sorted(set(_get_str_list(sec, path, "routes")))),
    )


def _static_endpoint_ok(endpoint: str) -> bool:
    try:
        ipaddress.ip_network(endpoint, strict=False)
    except ValueError:
        return False
    return True


def _cluster(data: object, path: str) -> ClusterConfig:
    sec = _section(data, path, _CLUSTER_KEYS)
    name = _get_str(sec, path, "name")
    if not name:
        raise ConfigError(f"{path}.name: required")
    raw_type = _get_str(sec, path, "type", "STATIC")
    ctype = _choice(raw_type, f"{path}.type", _CLUSTER_TYPES, "type (STATIC or STRICT_DNS)")
    raw_proto = _get_str(sec, path, "protocol", "udp")
    protocol = _choice(raw_proto, f"{path}.protocol", _CLUSTER_PROTOCOLS, "protocol (udp or tcp)")
    endpoints = _get_str_list(sec, path, "endpoints")
    check, what = (
        (_static_endpoint_ok, "an IP address or CIDR")
        if ctype == "STATIC"
        else (_is_host, "a host name")
    )
    for i, endpoint in enumerate(endpoints):
        if not check(endpoint):
            raise ConfigError(f"{path}.endpoints[{i}]: must be {what}, got {endpoint!r}")
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
        raise ConfigError(f"{key}: must be a list, got {_typename(value)}")
    return tuple(build(item, f"{key}[{i}]") for i, item in enumerate(value))


def from_dict(data: Mapping[str, Any]) -> StunnerConfig:
    """Validate a decoded config and fill in the defaults."""
    top = _section(data, "", _TOP_KEYS)
    version = top.get("version")
    if version is None:
        raise ConfigError(f"version: missing, expected {c.API_VERSION}")
    if version != c.API_VERSION:
        raise ConfigError(f"version: unsupported {version!r}, expected {c.API_VERSION}")
    admin = _admin(top.get("admin"))
    auth = _auth(top.get("auth"))
    listeners = _items(top, "listeners", _listener)
    clusters = _items(top, "clusters", _cluster)
    _check_unique((lis.name for lis in listeners), "listeners")
    _check_unique((cl.name for cl in clusters), "clusters")
    return StunnerConfig(c.API_VERSION, admin, auth, listeners, clusters)


def warnings(config: StunnerConfig) -> list[str]:
    """Legal but probably unintended settings, for the daemon to log."""
    out: list[str] = []
    names = {cl.name for cl in config.clusters}
    for i, lis in enumerate(config.listeners):
        for route in lis.routes:
            if route not in names:
                out.append(f"listeners[{i}].routes: no cluster named {route!r} (yet)")
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


# --------------------------------------------------------------------------------------------
# Text in and out.

_ENV_REF = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+))")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``$VAR`` and ``${VAR}`` like Go's ``os.ExpandEnv``, as upstream does: an unset
    variable becomes "" (unlike `os.path.expandvars`). A ``$`` not followed by a name stays."""
    values = os.environ if env is None else env
    return _ENV_REF.sub(lambda m: values.get(m.group(1) or m.group(2) or "", ""), text)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML resolves silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key != "<<":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse(text: str, source: str) -> object:
    # JSON first when it looks like JSON: YAML rejects tab indentation that JSON allows.
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_reject_duplicates)
        except ValueError:
            pass
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML or JSON: {exc.problem}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{source}: not valid YAML or JSON: {detail}") from None


def loads(text: str, source: str = "<string>") -> StunnerConfig:
    """Parse a config; environment variables are expanded first. Errors start with `source`."""
    data = _parse(expand_env(text), source)
    if data is None:
        raise ConfigError(f"{source}: empty config")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: must be a mapping, got {_typename(data)}")
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(path: str | os.PathLike[str]) -> StunnerConfig:
    """Read and parse a config file. OSError (e.g. a missing file) propagates unchanged."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return loads(text, source=os.fspath(path))


@dataclass(frozen=True, slots=True, repr=False)
class TurnUri:
    protocol: ListenerProtocol
    host: str
    port: int
    username: str
    password: str

    def __repr__(self) -> str:
        return (
            f"TurnUri(protocol={self.protocol!r}, host={self.host!r}, port={self.port}, "
            f"username={self.username!r}, password={_mask(self.password)})"
        )


# (scheme, transport) -> protocol, as upstream's URI parser maps them.
_URI_PROTOCOLS: Mapping[tuple[str, str], ListenerProtocol] = {
    ("turn", "udp"): "UDP",
    ("turn", "tcp"): "TCP",
    ("turns", "udp"): "DTLS",
    ("turns", "tcp"): "TLS",
    ("turn", "tls"): "TLS",
    ("turns", "tls"): "TLS",
    ("turn", "dtls"): "DTLS",
    ("turns", "dtls"): "DTLS",
}


def parse_turn_uri(uri: str, *, field: str = "uri") -> TurnUri:
    """Parse ``turn[s]://user:pass@host[:port][?transport=udp|tcp|tls|dtls]``; user and password
    are percent-decoded and required. The default port is 3478, or 443 for TLS/DTLS (as
    upstream)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError(f"{field}: invalid TURN URI {uri!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("turn", "turns") or not uri[len(scheme) :].startswith("://"):
        raise ConfigError(f"{field}: must be a turn:// or turns:// URI, got {uri!r}")
    options = dict(query)
    transport = options.pop("transport", "udp").lower()
    protocol = _URI_PROTOCOLS.get((scheme, transport))
    if options or protocol is None:
        raise ConfigError(f"{field}: only ?transport=udp|tcp|tls|dtls is supported, got {uri!r}")
    if not parts.hostname or not _is_host(parts.hostname):
        raise ConfigError(f"{field}: missing or invalid host in {uri!r}")
    if port == 0:
        raise ConfigError(f"{field}: port must be 1-65535, got {uri!r}")
    if not parts.username or not parts.password:
        raise ConfigError(
            f"{field}: user and password must be set ({scheme}://user:pass@host:port)"
        )
    return TurnUri(
        protocol=protocol,
        host=parts.hostname,
        port=port or (443 if protocol in ("TLS", "DTLS") else c.DEFAULT_PORT),
        username=unquote(parts.username),
        password=unquote(parts.password),
    )


def from_uri(uri: str) -> StunnerConfig:
    """A one-listener config from ``turn://user:pass@host:port[?transport=udp|tcp]``, as
    upstream's ``stunnerd turn://...`` builds it: plaintext auth, one open STATIC cluster, metrics
    and health checks off. TLS/DTLS need a certificate, so they need a config file."""
    turn = parse_turn_uri(uri)
    if turn.protocol in ("TLS", "DTLS"):
        raise ConfigError(f"uri: {turn.protocol} needs a certificate, use a config file instead")
    return StunnerConfig(
        admin=AdminConfig(healthcheck_endpoint=None),
        auth=AuthConfig(username=turn.username, password=turn.password),
        listeners=(
            ListenerConfig(
                name="default-listener",
                protocol=turn.protocol,
                address=turn.host,
                port=turn.port,
                routes=("allow-any",),
            ),
        ),
        clusters=(ClusterConfig(name="allow-any", endpoints=("0.0.0.0/0",)),),
    )


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode("ascii")


def _listener_dict(lis: ListenerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": lis.name,
        "protocol": lis.protocol,
        "address": lis.address,
        "port": lis.port,
    }
    if lis.public_address:
        out["public_address"] = lis.public_address
    if lis.public_port:
        out["public_port"] = lis.public_port
    out["min_relay_port"] = lis.min_relay_port
    out["max_relay_port"] = lis.max_relay_port
    if lis.cert:
        out["cert"] = _b64(lis.cert)
    if lis.key:
        out["key"] = _b64(lis.key)
    out["routes"] = list(lis.routes)
    return out


def to_dict(config: StunnerConfig) -> dict[str, Any]:
    """The upstream v1alpha1 document for `config`; ``from_dict(to_dict(c)) == c``."""
    auth = config.auth
    creds = (
        {"username": auth.username, "password": auth.password}
        if auth.type == "plaintext"
        else {"secret": auth.secret}
    )
    return {
        "version": config.version,
        "admin": {
            "name": config.admin.name,
            "loglevel": config.admin.loglevel,
            "metrics_endpoint": config.admin.metrics_endpoint,
            "healthcheck_endpoint": config.admin.healthcheck_endpoint or "",
            **({"user_quota": config.admin.user_quota} if config.admin.user_quota else {}),
            **({"limits": limits} if (limits := _limits_dict(config.admin.limits)) else {}),
        },
        "auth": {"type": auth.type, "realm": auth.realm, "credentials": creds},
        "listeners": [_listener_dict(lis) for lis in config.listeners],
        "clusters": [
            {"name": x.name, "type": x.type, "protocol": x.protocol, "endpoints": [*x.endpoints]}
            for x in config.clusters
        ],
    }


def dumps(config: StunnerConfig) -> str:
    """YAML text for `config`. Note that it holds the credentials in clear."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Diff, for reconciling a running daemon with a new config.

_Named = TypeVar("_Named", ListenerConfig, ClusterConfig)


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    admin_changed: bool = False
    metrics_endpoint_changed: bool = False
    healthcheck_endpoint_changed: bool = False
    loglevel_changed: bool = False
    limits_changed: bool = False
    auth_changed: bool = False
    listeners_added: tuple[ListenerConfig, ...] = ()
    listeners_removed: tuple[ListenerConfig, ...] = ()
    listeners_changed: tuple[tuple[ListenerConfig, ListenerConfig], ...] = ()
    clusters_added: tuple[ClusterConfig, ...] = ()
    clusters_removed: tuple[ClusterConfig, ...] = ()
    clusters_changed: tuple[tuple[ClusterConfig, ClusterConfig], ...] = ()

    def empty(self) -> bool:
        return self == _NO_CHANGE


_NO_CHANGE = ConfigDiff()


def _diff_named(
    old: Sequence[_Named], new: Sequence[_Named]
) -> tuple[tuple[_Named, ...], tuple[_Named, ...], tuple[tuple[_Named, _Named], ...]]:
    before = {item.name: item for item in old}
    after = {item.name: item for item in new}
    added = tuple(item for item in new if item.name not in before)
    removed = tuple(item for item in old if item.name not in after)
    changed = tuple(
        (before[item.name], item)
        for item in new
        if item.name in before and before[item.name] != item
    )
    return added, removed, changed


def diff(old: StunnerConfig, new: StunnerConfig) -> ConfigDiff:
    """What changed from `old` to `new`; listeners and clusters are matched by name."""
    l_added, l_removed, l_changed = _diff_named(old.listeners, new.listeners)
    c_added, c_removed, c_changed = _diff_named(old.clusters, new.clusters)
    return ConfigDiff(
        admin_changed=old.admin != new.admin,
        metrics_endpoint_changed=old.admin.metrics_endpoint != new.admin.metrics_endpoint,
        healthcheck_endpoint_changed=(
            old.admin.healthcheck_endpoint != new.admin.healthcheck_endpoint
        ),
        loglevel_changed=old.admin.loglevel != new.admin.loglevel,
        limits_changed=(
            (old.admin.limits, old.admin.user_quota) != (new.admin.limits, new.admin.user_quota)
        ),
        auth_changed=old.auth != new.auth,
        listeners_added=l_added,
        listeners_removed=l_removed,
        listeners_changed=l_changed,
        clusters_added=c_added,
        clusters_removed=c_removed,
        clusters_changed=c_changed,
    )
