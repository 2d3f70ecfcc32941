"""bench.instructions: the fixed relay workload and the callgrind figure it reads (exact
values on real sockets and on a written dump; valgrind itself only where it is installed)."""

from __future__ import annotations

import select
import shutil
import socket
import threading
from pathlib import Path

import pytest

from bench.instructions import CallgrindStunnerd, measure, relay_rounds
from bench.servers import Credentials
from stunner.stun import CHANNEL_MIN, pack_channel_data, parse_channel_data


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_instructions_reads_the_totals_of_the_newest_dump(tmp_path: Path) -> None:
    server = CallgrindStunnerd(tmp_path, Credentials(), None)
    (tmp_path / "callgrind.out.1").write_text("events: Ir\nfn=(1) main\n0 5\ntotals: 123456\n")
    assert server.instructions() == 123456
    argv = server.command()
    assert argv[:2] == ["valgrind", "--tool=callgrind"] and "-w" not in argv


def test_relay_rounds_sends_interleaved_bursts_and_reads_every_echo() -> None:
    """A fake relay in a thread (listener socket to clients, relay socket to the peer): the
    workload sends burst x clients ChannelData per round, interleaved, and returns only
    once every echo came back."""
    listener, relay, peer = udp(), udp(), udp()
    clients = [udp(), udp()]
    arrivals: list[tuple[tuple[str, int], bytes]] = []
    total = 2 * 3 * 2  # rounds x burst x clients

    def fake_relay() -> None:
        order: list[tuple[str, int]] = []
        for _ in range(2 * total):
            ready, _, _ = select.select([listener, relay], [], [], 5)
            if not ready:
                return
            data, source = ready[0].recvfrom(65536)
            if ready[0] is listener:
                channel, payload = parse_channel_data(data)
                assert channel == CHANNEL_MIN
                arrivals.append((source, payload))
                order.append(source)
                relay.sendto(payload, peer.getsockname())
            else:
                listener.sendto(pack_channel_data(CHANNEL_MIN, data), order.pop(0))

    thread = threading.Thread(target=fake_relay, daemon=True)
    thread.start()
    try:
        sent = relay_rounds(clients, listener.getsockname(), peer, burst=3, rounds=2, size=10)
        thread.join(10)
        assert sent == total
        names = [c.getsockname() for c in clients]
        assert [source for source, _ in arrivals] == names * 3 * 2  # interleaved
        assert [payload for _, payload in arrivals] == [
            bytes([k]) * 10 for _ in range(2) for k in range(3) for _ in names
        ]
    finally:
        for sock in (listener, relay, peer, *clients):
            sock.close()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_measurement_under_valgrind_counts_instructions() -> None:
    assert measure(None, allocations=1, burst=4, rounds=3, size=100) > 0
