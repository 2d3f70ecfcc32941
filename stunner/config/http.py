"""HTTP endpoints (metrics, health checks): ``http://[host][:port][/path]``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .fields import excerpt, is_host
from .model import ConfigError


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
        raise ConfigError(f"{field}: invalid http:// URL, got {excerpt(url)}") from None
    if parts.scheme.lower() != "http" or not url.lower().startswith("http://"):
        raise ConfigError(f"{field}: must be an http:// URL, got {excerpt(url)}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{field}: user info, query and fragment not allowed, got {excerpt(url)}")
    host = parts.hostname or "0.0.0.0"
    if not is_host(host):
        raise ConfigError(f"{field}: invalid host {excerpt(host)} in {excerpt(url)}")
    if port == 0:
        raise ConfigError(f"{field}: port must be 1-65535, got {excerpt(url)}")
    return HttpEndpoint(host=host, port=port or default_port, path=parts.path or "/")
