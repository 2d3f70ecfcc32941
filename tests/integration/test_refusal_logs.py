"""Refusal log lines from a live listener: TLS handshakes that fail, and a wrong password over
real UDP, each leave one INFO line naming the source (never the password)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aioice.stun import TransactionFailed

from testkit.wait import wait_for
from tests.integration.conftest import Gateway
from tests.support import TurnClient


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


async def test_a_failed_tls_handshake_is_logged_with_its_source_and_reason(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stunner.listener")
    port = gateway.ports["TLS"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    source = writer.get_extra_info("sockname")
    writer.write(b"GET / HTTP/1.0\r\n\r\n")  # plain HTTP to a TLS port
    assert await reader.read() == b""  # closed by stunnerd
    writer.close()
    name = gateway.listener_name("TLS")
    expected = f"{name}: TLS handshake from 127.0.0.1:{source[1]} failed: HTTP_REQUEST"
    await wait_for(lambda: messages(caplog, "stunner.listener", logging.INFO) == [expected])
    # A connection that closes before saying anything (a probe) is DEBUG only.
    _, probe = await asyncio.open_connection("127.0.0.1", port)
    probe_port = probe.get_extra_info("sockname")[1]
    probe.close()
    await wait_for(
        lambda: messages(caplog, "stunner.listener", logging.DEBUG)
        == [f"{name}: TLS handshake from 127.0.0.1:{probe_port} failed: "
            "closed before the handshake completed"]
    )  # fmt: skip
    assert messages(caplog, "stunner.listener", logging.INFO) == [expected]


async def test_a_wrong_password_over_udp_is_logged_once_without_the_password(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stunner")
    with pytest.raises(TransactionFailed):
        await TurnClient.connect(
            ("127.0.0.1", gateway.ports["UDP"]), "UDP", password="not-the-password"
        )
    failures = [m for m in messages(caplog, "stunner.turn", logging.INFO) if "failed" in m]
    assert len(failures) == 1
    assert failures[0].startswith(f"{gateway.listener_name('UDP')}: authentication failed: ")
    assert failures[0].endswith("user 'user1': wrong password")
    assert "not-the-password" not in caplog.text
