"""The GatewayConfig spec: defaults and validation, the same rules as the CRD schema.

The API server enforces the CRD's openAPIV3Schema, but a spec can still be bad: the CRD may be
an older copy, a manifest may be applied with validation off, and some rules (plaintext needs a
user name, minPort <= maxPort, a usable metrics URL) cannot be written as a schema. Those land
here and become a status condition, never a crash. tests/operator checks that the patterns and
defaults below are the ones in charts/stunner/crds/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stunner import constants as c
from stunner.config import ConfigError, parse_http_endpoint, parse_loglevel

from .resources import Obj, key, spec

# Upstream stunner-gateway-operator v1alpha1 patterns. authType is anchored as a group here:
# upstream's `^plaintext|longterm$` also admits "plaintext-foo" and "foo-longterm".
STUNNER_CONFIG_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
STUNNER_CONFIG_MAX_LENGTH = 64
REALM_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
AUTH_TYPE_PATTERN = r"^(plaintext|longterm)$"
CREDENTIAL_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
# Stricter than upstream (which only documents it): the scheme is mandatory.
ENDPOINT_PATTERN = r"^(http://.*)?$"

DEFAULTS: Mapping[str, str] = {
    "stunnerConfig": c.CONFIGMAP_NAME,
    "realm": c.DEFAULT_REALM,
    "authType": "plaintext",
}

_PATTERNS: Mapping[str, str] = {
    "stunnerConfig": STUNNER_CONFIG_PATTERN,
    "realm": REALM_PATTERN,
    "authType": AUTH_TYPE_PATTERN,
    "userName": CREDENTIAL_PATTERN,
    "password": CREDENTIAL_PATTERN,
    "metricsEndpoint": ENDPOINT_PATTERN,
    "healthCheckEndpoint": ENDPOINT_PATTERN,
}
_STRINGS = (
    "stunnerConfig",
    "realm",
    "authType",
    "userName",
    "password",
    "sharedSecret",
    "metricsEndpoint",
    "healthCheckEndpoint",
    "logLevel",
)


class SpecError(ValueError):
    """A GatewayConfig spec the operator cannot render; the message starts with the field."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    namespace: str
    name: str


@dataclass(frozen=True, slots=True, repr=False)
class GatewayConfigSpec:
    stunner_config: str = c.CONFIGMAP_NAME
    realm: str = c.DEFAULT_REALM
    auth_type: str = "plaintext"
    username: str = ""
    password: str = ""
    shared_secret: str = ""
    auth_ref: SecretRef | None = None
    metrics_endpoint: str | None = None  # None: not set, "" : explicitly off
    healthcheck_endpoint: str = c.DEFAULT_HEALTHCHECK_ENDPOINT
    loglevel: str = c.DEFAULT_LOGLEVEL
    min_port: int = c.DEFAULT_MIN_RELAY_PORT
    max_port: int = c.DEFAULT_MAX_RELAY_PORT

    def __repr__(self) -> str:  # keep credentials out of logs
        return f"GatewayConfigSpec(realm={self.realm!r}, auth_type={self.auth_type!r}, ...)"


def _string(sec: Mapping[str, Any], field: str) -> str | None:
    value = sec.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"spec.{field}: must be a string, got {value!r}")
    pattern = _PATTERNS.get(field)
    if pattern is not None and not re.search(pattern, value):
        shown = value if field not in ("userName", "password") else "<hidden>"
        raise SpecError(f"spec.{field}: {shown!r} does not match {pattern}")
    return value


def _port(sec: Mapping[str, Any], field: str, default: int) -> int:
    value = sec.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SpecError(f"spec.{field}: must be an integer 1-65535, got {value!r}")
    return value


def _auth_ref(sec: Mapping[str, Any], namespace: str) -> SecretRef | None:
    ref = sec.get("authRef")
    if ref is None:
        return None
    if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise SpecError("spec.authRef: must be a Secret reference with a name")
    if ref.get("group") not in (None, "", "v1") or ref.get("kind") not in (None, "Secret"):
        raise SpecError("spec.authRef: only core Secrets can be referenced")
    return SecretRef(str(ref.get("namespace") or namespace), ref["name"])


def parse_spec(gatewayconfig: Obj) -> GatewayConfigSpec:
    """Validate a GatewayConfig and fill in the defaults; raises `SpecError`."""
    sec = spec(gatewayconfig)
    if gatewayconfig.get("spec") is not None and not isinstance(gatewayconfig["spec"], Mapping):
        raise SpecError("spec: must be a mapping")
    namespace = key(gatewayconfig)[0]
    values = {f: _string(sec, f) for f in _STRINGS}
    config_name = values["stunnerConfig"] or DEFAULTS["stunnerConfig"]
    if len(config_name) > STUNNER_CONFIG_MAX_LENGTH:
        raise SpecError(f"spec.stunnerConfig: longer than {STUNNER_CONFIG_MAX_LENGTH} characters")
    auth_type = values["authType"] or DEFAULTS["authType"]
    auth_ref = _auth_ref(sec, namespace)
    plaintext = auth_type == "plaintext"
    if auth_ref is None and plaintext and not (values["userName"] and values["password"]):
        raise SpecError("spec.userName, spec.password: required for plaintext auth")
    if auth_ref is None and auth_type == "longterm" and not values["sharedSecret"]:
        raise SpecError("spec.sharedSecret: required for longterm auth")
    min_port = _port(sec, "minPort", c.DEFAULT_MIN_RELAY_PORT)
    max_port = _port(sec, "maxPort", c.DEFAULT_MAX_RELAY_PORT)
    if min_port > max_port:
        raise SpecError(f"spec.minPort: must be <= spec.maxPort, got {min_port} > {max_port}")
    metrics = values["metricsEndpoint"]
    health = values["healthCheckEndpoint"]
    loglevel = values["logLevel"] or c.DEFAULT_LOGLEVEL
    try:
        parse_http_endpoint(metrics or "", c.DEFAULT_METRICS_PORT, field="spec.metricsEndpoint")
        parse_http_endpoint(health or "", c.DEFAULT_HEALTH_PORT, field="spec.healthCheckEndpoint")
        parse_loglevel(loglevel, field="spec.logLevel")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    return GatewayConfigSpec(
        stunner_config=config_name,
        realm=values["realm"] or DEFAULTS["realm"],
        auth_type=auth_type,
        username=values["userName"] or "",
        password=values["password"] or "",
        shared_secret=values["sharedSecret"] or "",
        auth_ref=auth_ref,
        metrics_endpoint=metrics,
        healthcheck_endpoint=c.DEFAULT_HEALTHCHECK_ENDPOINT if health is None else health,
        loglevel=loglevel,
        min_port=min_port,
        max_port=max_port,
    )
