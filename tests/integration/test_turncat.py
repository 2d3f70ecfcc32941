"""turncat against a real TURN server (coturn's turnserver) and a UDP echo peer on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stunner
from stunner import config
from stunner.cli import turncat
from stunner.cli.turncat import TurnCat
from testkit.echo import EchoPeer
from testkit.ports import free_port
from testkit.wait import wait_for

Address = tuple[str, int]
K = 40  # datagrams per client
HOST = "127.0.0.1"
USER, PASSWORD = "w", "a b%/@"  # the password needs percent-encoding in a URI
QUOTED = "w:a%20b%25%2F%40"

pytestmark = pytest.mark.skipif(
    shutil.which("turnserver") is None or shutil.which("openssl") is None,
    reason="needs coturn's turnserver and openssl",
)


@dataclass(frozen=True)
class Coturn:
    port: int  # UDP and TCP
    tls_port: int
    log: Path

    def uri(self, transport: str = "udp", scheme: str = "turn", port: int = 0) -> str:
        return f"{scheme}://{QUOTED}@{HOST}:{port or self.port}?transport={transport}"


def _stun_ready(port: int) -> bool:
    """True once a STUN Binding request to 127.0.0.1:port gets an answer."""
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(request, (HOST, port))
            return sock.recv(2048)[8:20] == request[8:20]
        except OSError:
            return False


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    tmp = tmp_path_factory.mktemp("coturn")
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")),
            *("-days", "1", "-subj", "/CN=localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server = Coturn(
        free_port(HOST),
        free_port(HOST, udp=False),
        tmp / "turnserver.log",
    )
    relay_min = random.randrange(49152, 65000, 128)
    cmd = ["turnserver", "-n", "--no-cli", "--no-dtls", "--lt-cred-mech"]
    cmd += ["--user", f"{USER}:{PASSWORD}", "--realm", "r", "--listening-ip", HOST]
    cmd += ["--relay-ip", HOST, "--allow-loopback-peers", "--min-port", str(relay_min)]
    cmd += ["--max-port", str(relay_min + 127), "-p", str(server.port)]
    cmd += ["--tls-listening-port", str(server.tls_port), "--cert", str(tmp / "cert.pem")]
    cmd += ["--pkey", str(tmp / "key.pem"), "--log-file", str(server.log), "--simple-log"]
    cmd += ["--no-stdout-log", "--pidfile", str(tmp / "pid"), "--db", str(tmp / "turndb")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _stun_ready(server.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = server.log.read_text() if server.log.exists() else ""
                pytest.fail(f"turnserver did not come up (exit {proc.poll()}):\n{log[-2000:]}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.append(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable while turncat is not yet bound


@pytest.fixture
async def echo() -> AsyncIterator[tuple[EchoPeer, Address]]:
    peer = await EchoPeer.start(HOST)
    try:
        yield peer, peer.address
    finally:
        peer.close()


async def _client(remote: Address) -> Client:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Client, remote_addr=remote)
    return protocol


def _payloads(tag: int) -> list[bytes]:
    """Distinct datagrams of varied sizes, with every byte value in them."""
    return [f"c{tag}-{n:03d}:".encode() + bytes(range(256))[: (n * 37) % 256] for n in range(K)]


# ------------------------------------------------------------------------------------------
# The relay class, in-process


@pytest.mark.parametrize(
    ("scheme", "transport", "tls"),
    [("turn", "udp", False), ("turn", "tcp", False), ("turns", "tcp", True)],
)
async def test_two_clients_get_all_echoes(
    coturn: Coturn, echo: tuple[EchoPeer, Address], scheme: str, transport: str, tls: bool
) -> None:
    peer, peer_addr = echo
    uri = coturn.uri(transport, scheme, coturn.tls_port if tls else 0)
    server = config.parse_turn_uri(uri)
    assert (server.username, server.password) == (USER, PASSWORD)
    cat = TurnCat((HOST, 0), server, peer_addr, idle_timeout=0, insecure=tls)
    async with cat:
        clients = [await _client(cat.local_address) for _ in range(2)]
        sent = [_payloads(i) for i in range(2)]
        for client, payloads in zip(clients, sent, strict=True):
            assert client.transport is not None
            for data in payloads:
                client.transport.sendto(data)
        await wait_for(lambda: all(len(c.received) >= K for c in clients), timeout=15.0)
        for client, payloads in zip(clients, sent, strict=True):
            assert sorted(client.received) == sorted(payloads)
        sessions = list(cat.sessions.values())
        assert len(sessions) == 2
        assert [(s.sent, s.received) for s in sessions] == [(K, K), (K, K)]
        relayed = {s.relayed_address for s in sessions}
        assert len(relayed) == 2
        assert peer.sources == relayed  # one allocation per client
        assert (cat.dropped, cat.failures) == (0, 0)
        for client in clients:
            assert client.transport is not None
            client.transport.close()
    assert not cat.sessions


async def test_idle_session_is_deleted_and_recreated(
    coturn: Coturn, echo: tuple[EchoPeer, Address]
) -> None:
    _, peer_addr = echo
    cat = TurnCat((HOST, 0), config.parse_turn_uri(coturn.uri()), peer_addr, idle_timeout=0.3)
    async with cat:
        client = await _client(cat.local_address)
        assert client.transport is not None
        client.transport.sendto(b"one")
        await wait_for(lambda: client.received == [b"one"], timeout=15.0)
        (first,) = cat.sessions.values()
        await wait_for(lambda: not cat.sessions, timeout=15.0)
        assert await first.wait_closed(5.0)  # the allocation was deleted, not just forgotten
        client.transport.sendto(b"two")
        await wait_for(lambda: client.received == [b"one", b"two"], timeout=15.0)
        (second,) = cat.sessions.values()
        assert second is not first
        assert second.relayed_address != first.relayed_address
        client.transport.close()


async def test_wrong_password_drops_and_backs_off(
    coturn: Coturn,
    echo: tuple[EchoPeer, Address],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(turncat, "RETRY_AFTER", 60.0)
    _, peer_addr = echo
    uri = f"turn://{USER}:wrong@{HOST}:{coturn.port}"
    cat = TurnCat((HOST, 0), config.parse_turn_uri(uri), peer_addr, idle_timeout=0)
    async with cat:
        client = await _client(cat.local_address)
        assert client.transport is not None
        client.transport.sendto(b"x")
        await wait_for(lambda: cat.failures == 1, timeout=15.0)
        assert (
            "TURN allocation failed: TransactionFailed: STUN transaction failed (401" in caplog.text
        )
        assert not cat.sessions
        client.transport.sendto(b"y")
        await wait_for(lambda: cat.dropped == 1, timeout=15.0)  # no new attempt while backing off
        assert not cat.sessions
        assert client.received == []
        client.transport.close()


async def test_tls_verifies_the_server_certificate(
    coturn: Coturn, echo: tuple[EchoPeer, Address], caplog: pytest.LogCaptureFixture
) -> None:
    _, peer_addr = echo
    server = config.parse_turn_uri(coturn.uri("tcp", "turns", coturn.tls_port))
    cat = TurnCat((HOST, 0), server, peer_addr, idle_timeout=0)  # not insecure: self-signed
    async with cat:
        client = await _client(cat.local_address)
        assert client.transport is not None
        client.transport.sendto(b"x")
        await wait_for(lambda: cat.failures == 1, timeout=15.0)
        assert "TURN allocation failed: SSLCertVerificationError" in caplog.text
        assert not cat.sessions
        assert client.received == []
        client.transport.close()


def test_dtls_is_refused() -> None:
    with pytest.raises(ValueError, match="DTLS is not supported"):
        TurnCat((HOST, 0), config.parse_turn_uri("turns://u:p@h?transport=udp"), (HOST, 1))


# ------------------------------------------------------------------------------------------
# The command line


async def test_cli_relays_and_deletes_allocation_on_signal(
    coturn: Coturn, echo: tuple[EchoPeer, Address]
) -> None:
    _, peer_addr = echo
    local = free_port(HOST, tcp=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stunner.cli.turncat",
        "-l",
        "all:INFO",
        f"udp://{HOST}:{local}",
        coturn.uri("tcp"),
        f"udp://{HOST}:{peer_addr[1]}",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        client = await _client((HOST, local))
        assert client.transport is not None
        n = 0
        deadline = time.monotonic() + 20
        while not client.received:  # retry until turncat is up and relaying
            assert time.monotonic() < deadline, "no echo through the turncat process"
            client.transport.sendto(b"ping-%d" % n)
            n += 1
            await asyncio.sleep(0.1)
        assert set(client.received) <= {b"ping-%d" % i for i in range(n)}
        client.transport.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "TURN allocation created" in log
    assert "TURN allocation deleted" in log


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: client, server, peer"),
        (
            ["tcp://127.0.0.1:5000", "turn://u:p@h", "udp://1.2.3.4:5"],
            "client: expected udp://<host>:<port>, got 'tcp://127.0.0.1:5000'",
        ),
        (
            ["udp://127.0.0.1:5000", "turn://h:3478", "udp://1.2.3.4:5"],
            "server: user and password must be set (turn://user:pass@host:port)",
        ),
        (
            ["udp://127.0.0.1:5000", "http://u:p@h", "udp://1.2.3.4:5"],
            "server: must be a turn:// or turns:// URI, got 'http://u:p@h'",
        ),
        (
            ["udp://127.0.0.1:5000", "turns://u:p@h:443?transport=udp", "udp://1.2.3.4:5"],
            "server: DTLS is not supported, use TLS (turns://...?transport=tcp)",
        ),
        (
            ["udp://127.0.0.1:5000", "turn://u:p@h", "udp://1.2.3.4"],
            "peer: expected udp://<host>:<port>, got 'udp://1.2.3.4'",
        ),
        (
            ["udp://127.0.0.1:5000", "turn://u:p@h", "udp://1.2.3.4:5", "-l", "all:LOUD"],
            "--log: unknown level 'LOUD', expected one of "
            "TRACE, DEBUG, INFO, WARN, WARNING, ERROR, DISABLE",
        ),
        (
            ["udp://1.1.1.1:1", "turn://u:p@h", "udp://1.2.3.4:5", "--idle-timeout", "-1"],
            "argument --idle-timeout: must be a number of seconds >= 0, got '-1'",
        ),
        (["--bogus", "a", "b", "c"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert turncat.main(argv) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"turncat: error: {message}\n")


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert turncat.main(["--version"]) == 0
    assert capsys.readouterr().out == f"turncat (stunner) {stunner.__version__}\n"


def test_cli_process_exit_codes() -> None:
    """A real process: exit 2 for a bad argument, 1 when the port is taken or the peer unknown."""
    cmd = [sys.executable, "-m", "stunner.cli.turncat"]
    bad = subprocess.run([*cmd, "x"], capture_output=True, text=True, timeout=30)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "turncat: error: the following arguments are required: server, peer\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        args = [f"udp://{HOST}:{port}", "turn://u:p@127.0.0.1:1", f"udp://{HOST}:9"]
        busy = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"turncat: cannot listen on udp://{HOST}:{port}: ")
    assert busy.stderr.count("\n") == 1
    args = [f"udp://{HOST}:{port}", "turn://u:p@127.0.0.1:1", "udp://no-such-host.invalid:9"]
    unknown = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("turncat: cannot resolve peer no-such-host.invalid: ")
    assert unknown.stderr.count("\n") == 1


def test_turns_without_transport_is_tls_as_the_help_says() -> None:
    """RFC 7065: a turns URI without ?transport= is TLS over TCP, on port 443 by default."""
    assert "turns:// means TLS" in turncat._build_parser().format_help()
    options = turncat.parse_args(
        ["udp://127.0.0.1:5000", "turns://u:p@127.0.0.1", "udp://127.0.0.1:9"]
    )
    assert (options.server.protocol, options.server.port) == ("TLS", 443)
