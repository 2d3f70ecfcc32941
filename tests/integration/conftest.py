"""An in-process stunnerd on 127.0.0.1 with UDP, TCP and TLS listeners and an echo peer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stunner.config import StunnerConfig, from_dict
from stunner.daemon import Stunner
from stunner.stats import ListenerSample
from stunner.watcher import ConfigWatcher
from testkit.echo import EchoPeer
from testkit.ports import free_port
from tests.support import client_ssl_context, self_signed_cert

PROTOCOLS = ("UDP", "TCP", "TLS")


class LiveStats:
    """One listener's counters and gauges, read afresh on every attribute access, exactly as
    a scrape reads them (gauges counted from the live tables)."""

    def __init__(self, stunner: Stunner, name: str) -> None:
        self._stunner = stunner
        self._name = name

    def sample(self) -> ListenerSample:
        return self._stunner.sample(self._name)

    def __getattr__(self, field: str) -> int:
        value: int = getattr(self.sample(), field)
        return value


@dataclass
class Gateway:
    stunner: Stunner
    config: dict[str, Any]
    ports: dict[str, int]
    metrics_url: str
    echo: EchoPeer
    outsider: EchoPeer
    cert_pem: bytes
    watchers: list[ConfigWatcher] = field(default_factory=list)

    def watch(self, path: Path) -> ConfigWatcher:
        """A watcher of `path` for this gateway; its parser process ends with the fixture."""
        watcher = ConfigWatcher(str(path), self.stunner)
        self.watchers.append(watcher)
        return watcher

    def listener_name(self, protocol: str) -> str:
        return f"stunner/gw/{protocol.lower()}"

    def stats(self, protocol: str) -> LiveStats:
        return LiveStats(self.stunner, self.listener_name(protocol))

    def ssl_context(self) -> Any:
        return client_ssl_context(self.cert_pem)

    async def apply(self, config: dict[str, Any]) -> StunnerConfig:
        parsed = from_dict(config)
        await self.stunner.apply(parsed)
        self.config = config
        return parsed


def gateway_config(
    ports: dict[str, int], metrics_port: int, cert: bytes, key: bytes, echo_host: str
) -> dict[str, Any]:
    def listener(protocol: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": f"stunner/gw/{protocol.lower()}",
            "protocol": protocol,
            "address": "127.0.0.1",
            "port": ports[protocol],
            "min_relay_port": 45000,
            "max_relay_port": 45999,
            "routes": ["stunner/media-plane"],
        }
        if protocol == "TLS":
            entry["cert"] = base64.b64encode(cert).decode()
            entry["key"] = base64.b64encode(key).decode()
        return entry

    return {
        "version": "v1alpha1",
        "admin": {
            "name": "it-stunnerd",
            "metrics_endpoint": f"http://127.0.0.1:{metrics_port}/metrics",
            "healthcheck_endpoint": "",
        },
        "auth": {
            "type": "plaintext",
            "realm": "stunner.l7mp.io",
            "credentials": {"username": "user1", "password": "pass1"},
        },
        "listeners": [listener(p) for p in PROTOCOLS],
        "clusters": [{"name": "stunner/media-plane", "type": "STATIC", "endpoints": [echo_host]}],
    }


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    echo = await EchoPeer.start("127.0.0.1")
    outsider = await EchoPeer.start("127.0.0.77")  # loopback, but in no cluster
    cert, key = self_signed_cert(tmp_path)
    ports = {p: free_port() for p in PROTOCOLS}
    metrics_port = free_port()
    config = gateway_config(ports, metrics_port, cert, key, "127.0.0.1")
    stunner = Stunner()
    gw = Gateway(
        stunner, config, ports, f"http://127.0.0.1:{metrics_port}/metrics", echo, outsider, cert
    )
    try:
        await gw.apply(config)
        yield gw
    finally:
        for watcher in gw.watchers:
            watcher.close()
        await stunner.close()
        echo.close()
        outsider.close()
