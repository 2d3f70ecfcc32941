"""Live reconcile: what changes is applied, what does not change keeps running."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from stunner.watcher import ConfigWatcher
from testkit.ports import free_port
from testkit.wait import wait_for
from tests.integration.conftest import Gateway
from tests.support import TurnClient, samples, scrape_async, value


async def settle(watcher: ConfigWatcher, polls: int = 3) -> bool:
    """Poll like the watcher's loop does; True once a new config was applied."""
    for _ in range(polls):
        if await watcher.check_once():
            return True
    return False


async def test_reload_adds_a_listener_and_moves_metrics_while_relaying(
    gateway: Gateway, tmp_path: Path
) -> None:
    import yaml

    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 10, 64)
    udp = gateway.listener_name("UDP")
    old_metrics = gateway.metrics_url

    config = copy.deepcopy(gateway.config)
    new_port = free_port()
    new_metrics_port = free_port()
    config["listeners"].append(
        {
            "name": "stunner/gw/udp-2",
            "protocol": "UDP",
            "address": "127.0.0.1",
            "port": new_port,
            "routes": ["stunner/media-plane"],
        }
    )
    config["admin"]["metrics_endpoint"] = f"http://127.0.0.1:{new_metrics_port}/metrics"
    path = tmp_path / "stunnerd.conf"
    path.write_text(yaml.safe_dump(config))
    watcher = gateway.watch(path)
    assert await settle(watcher)
    assert not await watcher.check_once()  # unchanged file: nothing to do

    # The old allocation still relays, through the same relay socket.
    await client.send_and_wait(gateway.echo.address, 10, 64)
    # The new listener serves, and the metrics moved.
    second = await TurnClient.connect(("127.0.0.1", new_port), "UDP")
    await second.send_and_wait(gateway.echo.address, 3, 64)
    with pytest.raises(OSError):
        await scrape_async(old_metrics)
    scraped = samples(await scrape_async(f"http://127.0.0.1:{new_metrics_port}/metrics"))
    assert value(scraped, "stunner_cluster_packets_total", udp, "tx") == 20
    assert value(scraped, "stunner_allocations_active", udp) == 1
    assert value(scraped, "stunner_cluster_packets_total", "stunner/gw/udp-2", "tx") == 3
    await client.close()
    await second.close()


async def test_invalid_config_keeps_the_last_good_one(gateway: Gateway, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "stunnerd.conf"
    path.write_text(yaml.safe_dump(gateway.config))
    watcher = gateway.watch(path)
    assert await settle(watcher)
    running = gateway.stunner.config
    for broken in ("", "version: v1alpha1\nlisteners: [{name: x, port: 99999}]\n", "{{{"):
        path.write_text(broken)
        assert not await settle(watcher)
        assert gateway.stunner.config is running
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 3, 10)
    await client.close()
    path.unlink()
    assert not await settle(watcher)
    path.write_text(yaml.safe_dump(gateway.config).replace("it-stunnerd", "renamed"))
    assert await settle(watcher)
    assert gateway.stunner.config is not None
    assert gateway.stunner.config.admin.name == "renamed"


async def test_counters_survive_a_listener_restart(gateway: Gateway) -> None:
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 4, 10)
    await client.close()
    udp = gateway.listener_name("UDP")
    stats = gateway.stunner.stats[udp]
    await wait_for(lambda: gateway.stats("UDP").allocations == 0)
    before = stats.cluster_tx_packets
    config = copy.deepcopy(gateway.config)
    config["listeners"][0]["port"] = free_port()  # a socket-level change: restart
    await gateway.apply(config)
    assert gateway.stunner.stats[udp] is stats
    assert stats.cluster_tx_packets == before == 4


async def test_route_change_revokes_permissions_in_place(gateway: Gateway) -> None:
    client = await TurnClient.connect(("127.0.0.1", gateway.ports["UDP"]), "UDP")
    await client.send_and_wait(gateway.echo.address, 2, 10)
    listener = gateway.stunner.listeners[gateway.listener_name("UDP")]
    alloc = next(iter(listener.server.allocations.values()))
    assert "127.0.0.1" in alloc.permissions
    config = copy.deepcopy(gateway.config)
    config["clusters"][0]["endpoints"] = ["127.0.0.99"]
    await gateway.apply(config)
    assert gateway.stunner.listeners[gateway.listener_name("UDP")] is listener
    assert alloc.permissions == {} and alloc.channels == {}
    await client.close()


async def test_removed_listener_series_disappear(gateway: Gateway) -> None:
    config = copy.deepcopy(gateway.config)
    config["listeners"] = config["listeners"][:1]
    await gateway.apply(config)
    scraped = samples(await scrape_async(gateway.metrics_url))
    names = {
        dict(labels).get("name") for (metric, labels) in scraped if metric.startswith("stunner_")
    }
    assert names == {gateway.listener_name("UDP"), None}  # None: the config reload gauges


async def test_a_taken_udp_port_is_reported_not_shared(gateway: Gateway) -> None:
    """A second stunnerd on the same UDP port must fail loudly, not split the traffic."""
    from stunner.config import from_dict
    from stunner.daemon import Stunner

    other = Stunner(admin=False)
    try:
        await other.apply(from_dict(gateway.config))
        assert gateway.listener_name("UDP") not in other.listeners
    finally:
        await other.close()
