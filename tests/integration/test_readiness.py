"""Readiness that tells the truth: a listener that cannot serve makes /ready 503 and its
stunner_listener_ready 0; a rejected reload shows in the config reload gauges and keeps the
last good config (a broken certificate included)."""

from __future__ import annotations

import base64
import copy
import json
import socket
from pathlib import Path

import pytest

from stunner import daemon
from stunner.config import MAX_CONFIG_BYTES, from_dict
from stunner.daemon import Stunner
from testkit.ports import free_port
from testkit.wait import wait_for
from tests.integration.conftest import Gateway
from tests.integration.test_reload import settle
from tests.support import TurnClient, samples, scrape_async

BROKEN_PEM = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"


def ready(stunner: Stunner) -> tuple[int, str]:
    status, _, body = stunner.health.handle("/ready")
    return status, body.decode()


def gauge(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return scraped[(name, ())]


async def test_a_taken_port_makes_ready_503_until_it_is_free(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "LISTENER_RETRY_INTERVAL", 0.05)
    assert ready(gateway.stunner) == (200, "ready\n")
    port = free_port()
    taker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taker.bind(("127.0.0.1", port))
    config = copy.deepcopy(gateway.config)
    config["listeners"].append(
        {
            "name": "late",
            "protocol": "UDP",
            "address": "127.0.0.1",
            "port": port,
            "routes": ["stunner/media-plane"],
        }
    )
    try:
        await gateway.apply(config)
        status, body = ready(gateway.stunner)
        assert status == 503
        assert body.startswith(f"not ready: listener late: cannot serve UDP on 127.0.0.1:{port}: ")
        assert "Address already in use" in body
        scraped = samples(await scrape_async(gateway.metrics_url))
        assert scraped[("stunner_listener_ready", (("name", "late"),))] == 0
        udp = gateway.listener_name("UDP")
        assert scraped[("stunner_listener_ready", (("name", udp),))] == 1
    finally:
        taker.close()
    # The bind is retried: once the port is free, the listener serves and /ready is 200.
    await wait_for(lambda: "late" in gateway.stunner.listeners)
    assert ready(gateway.stunner) == (200, "ready\n")
    scraped = samples(await scrape_async(gateway.metrics_url))
    assert scraped[("stunner_listener_ready", (("name", "late"),))] == 1
    client = await TurnClient.connect(("127.0.0.1", port), "UDP")
    await client.send_and_wait(gateway.echo.address, 3, 20)
    await client.close()


async def test_an_unsupported_listener_is_not_ready_and_not_retried(gateway: Gateway) -> None:
    original = gateway.config
    config = copy.deepcopy(original)
    config["listeners"].append({"name": "dtls", "protocol": "DTLS", "cert": "", "key": ""})
    config["listeners"][-1].update(
        cert=gateway.config["listeners"][2]["cert"], key=gateway.config["listeners"][2]["key"]
    )
    await gateway.apply(config)
    assert ready(gateway.stunner) == (
        503,
        "not ready: listener dtls: cannot serve DTLS on 0.0.0.0:3478: DTLS listeners are not "
        "supported by this stunnerd\n",
    )
    assert gateway.stunner._retry_task is None
    # Removing it makes the gateway ready again.
    await gateway.apply(original)
    assert ready(gateway.stunner) == (200, "ready\n")
    assert gateway.stunner.listener_errors == {}


async def test_reload_gauges_follow_prometheus_convention(gateway: Gateway, tmp_path: Path) -> None:
    scraped = samples(await scrape_async(gateway.metrics_url))
    assert gauge(scraped, "stunner_config_last_reload_successful") == 1
    first = gauge(scraped, "stunner_config_last_reload_success_timestamp_seconds")
    assert first > 0
    path = tmp_path / "stunnerd.conf"
    watcher = gateway.watch(path)

    path.write_text("version: v1alpha1\nlisteners: [{name: x, port: 99999}]\n")
    assert not await settle(watcher)
    scraped = samples(await scrape_async(gateway.metrics_url))
    assert gauge(scraped, "stunner_config_last_reload_successful") == 0
    assert gauge(scraped, "stunner_config_last_reload_success_timestamp_seconds") == first

    renamed = copy.deepcopy(gateway.config)
    renamed["admin"]["name"] = "renamed"
    path.write_text(json.dumps(renamed))
    assert await settle(watcher)
    scraped = samples(await scrape_async(gateway.metrics_url))
    assert gauge(scraped, "stunner_config_last_reload_successful") == 1
    assert gauge(scraped, "stunner_config_last_reload_success_timestamp_seconds") > first


async def test_a_certificate_that_does_not_load_is_rejected(
    gateway: Gateway, tmp_path: Path
) -> None:
    path = tmp_path / "stunnerd.conf"
    watcher = gateway.watch(path)
    path.write_text(json.dumps(gateway.config))
    assert await settle(watcher)
    running = gateway.stunner.config
    bad = copy.deepcopy(gateway.config)
    bad["listeners"][2]["cert"] = base64.b64encode(BROKEN_PEM).decode()
    path.write_text(json.dumps(bad))
    assert not await settle(watcher)
    assert gateway.stunner.config is running
    assert watcher._last_error.startswith(
        f"config rejected, the last good config keeps running: {path}: listeners[2].cert: "
        "the certificate and key do not load together: "
    )
    # The TLS listener was not restarted with it: it still serves with the good certificate.
    client = await TurnClient.connect(
        ("127.0.0.1", gateway.ports["TLS"]), "TLS", ssl_context=gateway.ssl_context()
    )
    await client.send_and_wait(gateway.echo.address, 3, 20)
    await client.close()
    assert ready(gateway.stunner) == (200, "ready\n")


async def test_a_file_over_the_limit_is_refused_unread(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "stunnerd.conf"
    watcher = gateway.watch(path)
    path.write_text(json.dumps(gateway.config) + "\n#" + "x" * MAX_CONFIG_BYTES)
    running = gateway.stunner.config
    assert not await settle(watcher)
    assert gateway.stunner.config is running
    size = path.stat().st_size
    assert watcher._last_error == (
        f"config rejected, the last good config keeps running: {path}: {size} bytes, "
        f"larger than the {MAX_CONFIG_BYTES}-byte limit"
    )


async def test_a_supervisor_exports_no_listener_readiness() -> None:
    supervisor = Stunner(data_plane=False, admin=False)
    try:
        config = from_dict(
            {
                "version": "v1alpha1",
                "auth": {"credentials": {"username": "u", "password": "p"}},
                "listeners": [{"name": "l", "port": free_port()}],
            }
        )
        await supervisor.apply(config)
        names = {metric.name for metric in supervisor.registry.collect()}
        assert "stunner_listener_ready" not in names
        assert "stunner_config_last_reload_successful" in names
    finally:
        await supervisor.close()
