"""Refusals, drops and health, through a live Prometheus (issue 14; docs/metrics.md).

Each scenario causes what a family counts and asserts the exact change: a wrong password
(401s, no allocation), a refused peer (403), a quota hit (486), a flood of peer datagrams
without a permission (no_permission drops), a listener whose port is taken
(stunner_listener_ready 0, then 1 once the port is free), and a bad config reload
(stunner_config_last_reload_successful 0, then 1 once the good file is back). Requests go over
TCP where counts must be exact: a TCP client's answers never meet the UDP amplification guard.

The expected values are written here, not read from stunner.stats: a check that takes its
expectation from the code under test cannot fail.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

import pytest
import requests
from aioice import stun
from prometheus_client.parser import text_string_to_metric_families

from e2e import gateway as gw
from e2e.checks import Checker, Expect, Recorder
from e2e.clients import Allocation
from e2e.targets.base import Target
from testkit.ports import free_port

if TYPE_CHECKING:
    from e2e.targets.local import LocalLab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

METHODS = 6  # binding, allocate, refresh, create_permission, channel_bind, other
CODES = 14  # 200 and the 13 error codes stunnerd answers with
DROP_REASONS = 8
DELETE_REASONS = 5
FLOOD = 40
FLOOD_SIZE = 60
EXTRA = "stunner/refusals-gateway/udp-listener"


def _increase(check: Checker, family: str, since: float, **labels: str) -> str:
    matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = f"{family}{check.scope.sel(matchers)}"
    return f"sum({series}) - sum({series} @ {since:.3f})"


def _value(check: Checker, family: str, **labels: str) -> str:
    matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"sum({family}{check.scope.sel(matchers)})"


def _scraped(url: str, family: str) -> float:
    """The sum of a family's samples straight from the gateway's /metrics, now."""
    text = requests.get(url, timeout=5).text
    return sum(
        float(sample.value)
        for metric in text_string_to_metric_families(text)
        for sample in metric.samples
        if sample.name == family
    )


def _wait_reloaded(url: str, after: float, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    family = "stunner_config_last_reload_success_timestamp_seconds"
    while _scraped(url, family) < after:
        if time.monotonic() > deadline:
            raise AssertionError(f"the gateway did not apply the new config in {timeout}s")
        time.sleep(0.1)


def _main_gateway(local: Target) -> tuple[LocalLab, gw.Gateway, gw.GatewayConfig]:
    """The local lab's gateway "a", which a scenario reconfigures, and its running config."""
    lab = local.lab
    assert lab is not None
    original = lab.configs["a"]
    assert isinstance(original, gw.GatewayConfig)
    return lab, lab.gateways["a"], original


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.attributes["ERROR-CODE"][0]) if response is not None else repr(exc)


async def test_new_families_exist_per_listener(target: Target, recorder: Recorder) -> None:
    """Every listener exports the full, bounded label grid from the start."""
    name = target.listeners["tcp"].name
    check = Checker(target.scope, "families beyond upstream", recorder)
    sel = check.scope.sel(f'name="{name}"')
    queries = {
        "responses grid": (
            f"count(stunner_turn_responses_total{sel})",
            Expect.exact(METHODS * CODES, "6 methods x 14 codes"),
        ),
        "drop reasons": (
            f"count(stunner_dropped_packets_total{sel})",
            Expect.exact(DROP_REASONS, "8 reasons"),
        ),
        "dropped bytes reasons": (
            f"count(stunner_dropped_bytes_total{sel})",
            Expect.exact(DROP_REASONS, "8 reasons"),
        ),
        "delete reasons": (
            f"count(stunner_allocations_deleted_total{sel})",
            Expect.exact(DELETE_REASONS, "5 reasons"),
        ),
        "lifetime histogram buckets": (
            f"count(stunner_allocation_duration_seconds_bucket{sel})",
            Expect.exact(12, "11 bounds and +Inf"),
        ),
        "listener ready": (f"sum(stunner_listener_ready{sel})", Expect.exact(1, "serving")),
        "build info": (
            f"count(stunner_build_info{check.scope.sel()})",
            Expect.exact(1, "one stunnerd"),
        ),
        "not draining": (f"sum(stunner_draining{check.scope.sel()})", Expect.exact(0, "")),
        "relay port range": (
            f"sum(stunner_listener_relay_ports{sel}) > 0",
            Expect.between(1, 65536, "the configured range"),
        ),
    }
    await asyncio.to_thread(check.expect_values, queries)
    check.assert_all()


async def test_wrong_password_and_refused_peer(target: Target, recorder: Recorder) -> None:
    endpoint = target.listeners["tcp"]
    name = endpoint.name
    check = Checker(target.scope, "wrong password, refused peer", recorder)
    since = (await asyncio.to_thread(check.snapshot)).at

    try:
        await Allocation.open(endpoint, target.username, "not-the-password")
        wrong = "success"
    except stun.TransactionFailed as exc:
        wrong = _code(exc)
    check.expect_true("wrong password is refused", "client", wrong == "401", "401", wrong)

    alloc = await Allocation.open(endpoint, target.username, target.password)
    try:
        try:
            await alloc.request(
                stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": target.outside_peer}
            )
            refused = "success"
        except stun.TransactionFailed as exc:
            refused = _code(exc)
        check.expect_true("peer outside the cluster", "client", refused == "403", "403", refused)
    finally:
        await alloc.close()
    closed = time.time()

    def responses(method: str, code: str) -> str:
        return _increase(
            check, "stunner_turn_responses_total", since, name=name, method=method, code=code
        )

    queries = {
        # The challenge and the wrong credentials; then the good client's challenge.
        "401 to Allocate": (responses("allocate", "401"), Expect.exact(3, "2 + 1 challenge")),
        "Allocate successes": (responses("allocate", "200"), Expect.exact(1, "the good client")),
        "403 to CreatePermission": (responses("create_permission", "403"), Expect.exact(1, "")),
        "Refresh successes": (responses("refresh", "200"), Expect.exact(1, "the close")),
        "allocations deleted": (
            _increase(check, "stunner_allocations_deleted_total", since, name=name),
            Expect.exact(1, "one allocation ended"),
        ),
        "lifetimes observed": (
            _increase(check, "stunner_allocation_duration_seconds_count", since, name=name),
            Expect.exact(1, "one allocation ended"),
        ),
    }
    await asyncio.to_thread(check.expect_values, queries, after=closed)
    check.assert_all()


async def test_peer_flood_without_permission(target: Target, recorder: Recorder) -> None:
    endpoint = target.listeners["udp"]
    name = endpoint.name
    check = Checker(target.scope, "peer datagrams without a permission", recorder)
    since = (await asyncio.to_thread(check.snapshot)).at
    alloc = await Allocation.open(endpoint, target.username, target.password)
    try:
        assert alloc.relayed is not None
        # The allocation has no permission at all: every datagram from any peer is dropped.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((endpoint.host, 0))
            for _ in range(FLOOD):
                peer.sendto(b"f" * FLOOD_SIZE, alloc.relayed)
                await asyncio.sleep(0.001)
        sent = time.time()
        queries = {
            "no_permission drops": (
                _increase(
                    check,
                    "stunner_dropped_packets_total",
                    since,
                    name=name,
                    reason="no_permission",
                ),
                Expect.exact(FLOOD, "every flood datagram"),
            ),
            "no_permission bytes": (
                _increase(
                    check, "stunner_dropped_bytes_total", since, name=name, reason="no_permission"
                ),
                Expect.exact(FLOOD * FLOOD_SIZE, "their payload bytes"),
            ),
            "nothing relayed from the flood": (
                _increase(check, "stunner_cluster_packets_total", since, name=name, direction="rx"),
                Expect.exact(0, "a peer without a permission is not cluster rx"),
            ),
        }
        await asyncio.to_thread(check.expect_values, queries, after=sent)
    finally:
        await alloc.close()
    check.assert_all()


async def test_quota_hit(local: Target, recorder: Recorder) -> None:
    lab, gateway, original = _main_gateway(local)
    url = lab.metrics_url("a")
    endpoint = local.listeners["tcp"]
    check = Checker(local.scope, "allocation quota reached", recorder)
    since = (await asyncio.to_thread(check.snapshot)).at
    # Earlier scenarios may leave allocations of the same user (uclient's probes): the quota
    # leaves room for exactly one more.
    held_before = int(await asyncio.to_thread(_scraped, url, "stunner_allocations_active"))
    quota = original.render()
    quota["admin"]["user_quota"] = held_before + 1
    written = time.time()
    gateway.write(quota)
    held: list[Allocation] = []
    try:
        await asyncio.to_thread(_wait_reloaded, url, written)
        held.append(await Allocation.open(endpoint, local.username, local.password))
        try:
            held.append(await Allocation.open(endpoint, local.username, local.password))
            second = "success"
        except stun.TransactionFailed as exc:
            second = _code(exc)
        check.expect_true("second allocation of the user", "client", second == "486", "486", second)
        queries = {
            "486 to Allocate": (
                _increase(
                    check,
                    "stunner_turn_responses_total",
                    since,
                    name=endpoint.name,
                    method="allocate",
                    code="486",
                ),
                Expect.exact(1, "the second allocation"),
            ),
            "quota exported": (
                _value(check, "stunner_allocation_quota_per_user"),
                Expect.exact(held_before + 1, "admin.user_quota"),
            ),
        }
        await asyncio.to_thread(check.expect_values, queries)
    finally:
        for alloc in held:
            await alloc.close()
        gateway.write(original)
    check.assert_all()


async def test_listener_port_taken_then_freed(local: Target, recorder: Recorder) -> None:
    lab, gateway, original = _main_gateway(local)
    address = lab.address["a"]
    check = Checker(local.scope, "a listener whose port is taken", recorder)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((address, free_port(address)))
    port = squatter.getsockname()[1]
    extra = gw.GatewayConfig(**{**original.__dict__, "listeners": list(original.listeners)})
    extra.listeners.append(gw.ListenerSpec(EXTRA, "UDP", port, [original.clusters[0].name]))
    try:
        written = time.time()
        gateway.write(extra)
        await asyncio.to_thread(
            check.expect_values,
            {"ready while taken": (_value(check, "stunner_listener_ready", name=EXTRA),
                                   Expect.exact(0, "its port is taken"))},
            after=written,
        )  # fmt: skip
        squatter.close()
        freed = time.time()
        await asyncio.to_thread(
            check.expect_values,
            {"ready once freed": (_value(check, "stunner_listener_ready", name=EXTRA),
                                  Expect.exact(1, "the bind retry (every 5 s) succeeds"))},
            after=freed,
            settle=15,
        )  # fmt: skip
    finally:
        squatter.close()
        gateway.write(original)
    check.assert_all()


async def test_bad_config_reload(local: Target, recorder: Recorder) -> None:
    _, gateway, original = _main_gateway(local)
    check = Checker(local.scope, "a config reload that fails", recorder)
    ok = _value(check, "stunner_config_last_reload_successful")
    try:
        written = time.time()
        gateway.write("listeners: [this is not a stunnerd config\n")
        await asyncio.to_thread(
            check.expect_values,
            {"reload rejected": (ok, Expect.exact(0, "the file does not parse"))},
            after=written,
        )
    finally:
        gateway.write(original)
    restored = time.time()
    await asyncio.to_thread(
        check.expect_values,
        {"good file back": (ok, Expect.exact(1, "the running config is the file again"))},
        after=restored,
    )
    check.assert_all()
