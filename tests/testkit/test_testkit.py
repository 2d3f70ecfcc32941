"""testkit: the echo peer's answers and counts are exact, free ports bind, waits end."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from testkit.echo import Asymmetric, EchoCounts, EchoPeer, EchoProcess, EchoThread, Longer
from testkit.ports import free_port, free_udp_block, port_is_free
from testkit.wait import DeadlineExceeded, GiveUp, poll, poll_async, wait_for

HOST = "127.0.0.1"


def exchange(sock: socket.socket, to: tuple[str, int], payloads: list[bytes]) -> list[bytes]:
    """Send each payload, then read every answer that arrives within a short quiet time."""
    for data in payloads:
        sock.sendto(data, to)
    sock.settimeout(0.5)
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(2048))
        except TimeoutError:
            return got


def test_asymmetric_answers_resize_and_double() -> None:
    answer = Asymmetric(6, twice_every=3)
    assert [list(answer(b"abcdefghij")) for _ in range(3)] == [
        [b"abcdef"],
        [b"abcdef"],
        [b"abcdef", b"abcdef"],
    ]
    assert list(Asymmetric(4)(b"x")) == [b"x..."]


def test_longer_answers_depend_only_on_the_datagram() -> None:
    answer = Longer(3, twice_every=3)
    seq = [(7).to_bytes(4, "big") + n.to_bytes(4, "big") for n in (1, 3, 6, 3)]
    assert [list(answer(d)) for d in seq] == [
        [seq[0] + b"\xa5\xa5\xa5"],
        [seq[1] + b"\xa5\xa5\xa5"] * 2,
        [seq[2] + b"\xa5\xa5\xa5"] * 2,
        [seq[3] + b"\xa5\xa5\xa5"] * 2,  # the same datagram again: the same answers
    ]
    assert list(Longer(1, twice_every=1)(b"abc")) == [b"abc\xa5"] * 2  # short: sequence 1
    assert list(Longer(2)(b"x" * 8)) == [b"x" * 8 + b"\xa5\xa5"]


def test_detached_process_serves_its_port_without_a_control_pipe() -> None:
    port = free_port(HOST, tcp=False)
    argv = [sys.executable, "-m", "testkit.echo", HOST, "--port", str(port), "--detached"]
    argv += ["--longer", "2", "--twice-every", "2"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", str(port)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            data = bytes(4) + (2).to_bytes(4, "big")
            assert exchange(sock, (HOST, port), [data]) == [data + b"\xa5\xa5"] * 2
        assert proc.poll() is None  # stdin at EOF did not end it
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_peer_on_the_loop_mirrors_and_counts() -> None:
    peer = await EchoPeer.start(HOST)
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=(HOST, 0))
    try:
        for size in (1, 10, 100):
            transport.sendto(b"z" * size, peer.address)
        await wait_for(lambda: len(got) == 3)
        assert sorted(map(len, got)) == [1, 10, 100]
        assert peer.counts() == EchoCounts(3, 111, 3, 111, 0)
        assert (peer.received, peer.received_bytes) == (3, 111)
        assert peer.sources == {transport.get_extra_info("sockname")}
        peer.send(b"unasked", transport.get_extra_info("sockname"))
        await wait_for(lambda: got[-1] == b"unasked")
        assert peer.counts().sent_packets == 4
    finally:
        transport.close()
        peer.close()


def test_thread_peer_answers_asymmetrically_and_sends_unasked() -> None:
    with (
        EchoThread(HOST, answer=Asymmetric(3, twice_every=2)) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.bind((HOST, 0))
        got = exchange(sock, peer.address, [b"one-", b"two-", b"three"])
        assert sorted(got) == [b"one", b"thr", b"two", b"two"]
        peer.send(b"hello", sock.getsockname())
        assert exchange(sock, peer.address, []) == [b"hello"]
        assert peer.counts() == EchoCounts(3, 13, 5, 17, 0)


def test_process_peer_counts_over_its_pipe() -> None:
    with (
        EchoProcess(HOST, lifetime=60) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        sock.bind((HOST, 0))
        assert sorted(exchange(sock, peer.address, [b"a" * 5, b"b" * 7])) == [b"a" * 5, b"b" * 7]
        assert peer.counts() == EchoCounts(2, 12, 2, 12, 0)
        proc = peer.proc
    assert proc is not None and proc.returncode == 0  # closing stdin ended it


def test_free_ports_bind() -> None:
    port = free_port(HOST)
    assert port_is_free(HOST, port, (socket.SOCK_STREAM, socket.SOCK_DGRAM))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, port))
        assert not port_is_free(HOST, port, (socket.SOCK_DGRAM,))
        assert port_is_free(HOST, port, (socket.SOCK_STREAM,))
    base = free_udp_block(4)
    assert all(port_is_free(HOST, p, (socket.SOCK_DGRAM,)) for p in range(base, base + 4))


def test_poll_returns_the_value_and_reports_the_last_one() -> None:
    values = iter(range(100))
    assert poll(lambda: next(values), lambda v: v >= 3, interval=0) == 3
    with pytest.raises(DeadlineExceeded, match=r"counter: gave up waiting, last value 7") as err:
        poll(lambda: 7, lambda v: v > 7, timeout=0.05, what="counter", interval=0.01)
    assert err.value.last == 7
    assert isinstance(err.value, TimeoutError) and isinstance(err.value, AssertionError)


def test_poll_retries_only_the_named_errors_and_stops_early() -> None:
    with pytest.raises(ZeroDivisionError):
        poll(lambda: 1 // 0, timeout=5)
    with pytest.raises(DeadlineExceeded, match="ZeroDivisionError"):
        poll(lambda: 1 // 0, timeout=0.05, interval=0.01, retry_on=(ArithmeticError,))

    def exited() -> bool:
        raise GiveUp("the server exited")

    with pytest.raises(GiveUp):
        poll(exited, timeout=30, retry_on=(Exception,))
    tries: list[int] = []
    with pytest.raises(DeadlineExceeded):
        poll(lambda: tries.append(1), timeout=30, stop=lambda: len(tries) == 2)
    assert len(tries) == 2  # stop ended it, not the 30 s deadline


async def test_async_poll_lets_the_loop_run() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)
    assert await poll_async(done.is_set, timeout=5) is True
