"""TURN URIs: ``turn[s]://user:pass@host[:port][?transport=...]`` and the one-listener config
``stunnerd turn://...`` runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from stunner import constants as c

from .fields import excerpt, is_host
from .model import (
    AdminConfig,
    AuthConfig,
    ClusterConfig,
    ConfigError,
    ListenerConfig,
    ListenerProtocol,
    StunnerConfig,
    mask,
)


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
            f"username={self.username!r}, password={mask(self.password)})"
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
        raise ConfigError(f"{field}: invalid TURN URI {excerpt(uri)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("turn", "turns") or not uri[len(scheme) :].startswith("://"):
        raise ConfigError(f"{field}: must be a turn:// or turns:// URI, got {excerpt(uri)}")
    options = dict(query)
    transport = options.pop("transport", "tcp" if scheme == "turns" else "udp").lower()  # RFC 7065
    protocol = _URI_PROTOCOLS.get((scheme, transport))
    if options or protocol is None:
        raise ConfigError(
            f"{field}: only ?transport=udp|tcp|tls|dtls is supported, got {excerpt(uri)}"
        )
    if not parts.hostname or not is_host(parts.hostname):
        raise ConfigError(f"{field}: missing or invalid host in {excerpt(uri)}")
    if port == 0:
        raise ConfigError(f"{field}: port must be 1-65535, got {excerpt(uri)}")
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
