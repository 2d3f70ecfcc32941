"""The config model: what a validated stunnerd config holds.

Build instances with `from_dict`/`loads` (the ``sections`` and ``parse`` modules), which
validate and fill defaults; the constructors here do neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stunner import constants as c

ListenerProtocol = Literal["UDP", "TCP", "TLS", "DTLS"]
ClusterType = Literal["STATIC", "STRICT_DNS"]
AuthType = Literal["plaintext", "longterm"]

_SECRET = "<SECRET>"


def mask(value: str | bytes) -> str:
    """How a secret shows in a repr: never its value, but whether it is set."""
    return _SECRET if value else repr(value)


class ConfigError(ValueError):
    """An invalid stunnerd config; the message names the field path and the problem."""


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
    stream_write_buffer: int = c.DEFAULT_STREAM_WRITE_BUFFER  # bytes queued for one TCP/TLS client
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
            f"password={mask(self.password)}, secret={mask(self.secret)})"
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
            f"cert={mask(self.cert)}, key={mask(self.key)}, routes={self.routes!r})"
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
