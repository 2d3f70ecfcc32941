"""Test helpers for stunnerd's own tests: TLS material, aioice clients, scrapes, raw STUN.

Echo peers, free ports and waiting are in `testkit`, shared with bench/, soak/ and fuzz/."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import logging
import ssl
import struct
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioice.turn import create_turn_endpoint
from prometheus_client.parser import text_string_to_metric_families

from testkit.wait import wait_for


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """PEM cert and key for ``host``, made at test time (the e2e harness's generator)."""
    from e2e.certs import self_signed

    made = self_signed(host)
    (directory / "cert.pem").write_bytes(made.cert_pem)
    return made.cert_pem, made.key_pem


def client_ssl_context(cert_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=cert_pem.decode())
    ctx.check_hostname = False
    return ctx


@dataclass
class TurnClient:
    """One aioice TURN allocation and the echoes it got back."""

    transport: asyncio.DatagramTransport
    received: list[bytes] = field(default_factory=list)

    @classmethod
    async def connect(
        cls,
        server: tuple[str, int],
        protocol: str,
        username: str = "user1",
        password: str = "pass1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> TurnClient:
        received: list[bytes] = []

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                received.append(data)

        transport, _ = await create_turn_endpoint(
            Receiver,
            server,
            username=username,
            password=password,
            transport="udp" if protocol == "UDP" else "tcp",
            ssl=ssl_context if protocol == "TLS" else False,
        )
        return cls(transport, received)

    async def send_and_wait(
        self, peer: tuple[str, int], count: int, size: int, timeout: float = 10.0
    ) -> None:
        """Send ``count`` datagrams of ``size`` bytes; wait until every echo is back."""
        start = len(self.received)
        for i in range(count):
            self.transport.sendto(bytes([i % 256]) * size, peer)
            await asyncio.sleep(0)
        await wait_for(lambda: len(self.received) - start >= count, timeout)

    @property
    def protocol(self) -> Any:
        """aioice's inner TURN client protocol (for raw ChannelBind and the like)."""
        return self.transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]

    async def close(self) -> None:
        self.transport.close()
        # aioice deletes the allocation (Refresh lifetime 0) in the background.
        await asyncio.sleep(0)


class ErrorLog(logging.Handler):
    """Collects ERROR records (``logger.exception`` included): a handler crash shows here."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def scrape_async(url: str) -> str:
    """Scrape from a worker thread: the in-process metrics server runs on this loop."""
    return await asyncio.to_thread(scrape, url)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text to {(sample name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    listener: str,
    direction: str | None = None,
) -> float:
    labels = {"name": listener}
    if direction is not None:
        labels["direction"] = direction
    return scraped[(name, tuple(sorted(labels.items())))]


# Raw STUN on the wire, for hostile input: attributes the codec would refuse to pack, signed.

_STUN_HEADER = struct.Struct("!HHI12s")
_MAGIC_COOKIE = 0x2112A442


def tlv(code: int, value: bytes) -> bytes:
    """One STUN attribute, padded to 4 bytes, whatever its value holds."""
    return struct.pack("!HH", code, len(value)) + value + bytes(-len(value) % 4)


def raw_stun(mtype: int, transaction_id: bytes, body: bytes) -> bytes:
    """A STUN header with the right length in front of ``body``."""
    return _STUN_HEADER.pack(mtype, len(body), _MAGIC_COOKIE, transaction_id) + body


def sign_raw(
    mtype: int, transaction_id: bytes, body: bytes, key: bytes, fingerprint: bool
) -> bytes:
    """``body`` plus a valid MESSAGE-INTEGRITY (and FINGERPRINT): hostile but authentic."""
    head = _STUN_HEADER.pack(mtype, len(body) + 24, _MAGIC_COOKIE, transaction_id)
    body += tlv(0x0008, hmac.new(key, head + body, hashlib.sha1).digest())
    if fingerprint:
        head = _STUN_HEADER.pack(mtype, len(body) + 8, _MAGIC_COOKIE, transaction_id)
        crc = (binascii.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += tlv(0x8028, struct.pack("!I", crc))
    return raw_stun(mtype, transaction_id, body)


def numbered_sample(offset: int) -> Any:
    """A ListenerSample whose every value differs: field i is ``offset + i``, and a sequence
    field holds ``offset + 1000 * i + k`` at item k."""
    from stunner.stats import ListenerSample

    values: list[Any] = []
    for i, default in enumerate(ListenerSample()):
        if isinstance(default, tuple):
            values.append(tuple(offset + 1000 * i + k for k in range(len(default))))
        else:
            values.append(offset + i)
    return ListenerSample(*values)
