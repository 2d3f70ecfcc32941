"""Config out: the upstream v1alpha1 document and its YAML text."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from .model import LimitsConfig, ListenerConfig, StunnerConfig
from .sections import LIMIT_FIELDS


def _limits_dict(limits: LimitsConfig) -> dict[str, Any]:
    """Only the limits that differ from the defaults, so rendered configs stay upstream-like."""
    defaults = LimitsConfig()
    return {
        key: getattr(limits, key)
        for key in LIMIT_FIELDS
        if getattr(limits, key) != getattr(defaults, key)
    }


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
            # Omitted when off, as upstream's omitempty and the operator's rendering do.
            **({"metrics_endpoint": m} if (m := config.admin.metrics_endpoint) else {}),
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
