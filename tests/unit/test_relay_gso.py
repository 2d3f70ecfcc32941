"""Runs of equal-size datagrams leave as one segmented sendmsg (UDP GSO, stunner.batchio): the
destinations receive exactly what the sendmmsg path delivers, and the counters are the same.

Every scenario runs twice on real loopback sockets, with ``batchio.GSO`` on and off, and what
each socket received (bytes, order, source) and every counter must be identical. The GSO runs
also check that segmented sends were made (the batch's ``sendmsg`` is wrapped to count its
calls; the kernel still does the sending). The refusals and the fallback use the kernel's own
refusals where one can be had on loopback: a closed socket (EBADF), a destination port 0
(EINVAL for both paths), and SO_NO_CHECK, under which the kernel refuses UDP_SEGMENT (EINVAL)
but sends plain datagrams.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from stunner import batchio
from stunner.batchio import BATCH, HEADROOM, NATIVE, SLOT, DatagramBatch
from stunner.stats import Drop
from stunner.stun import pack_channel_data

from .test_relay_batching import (
    Relay,
    counters,
    everything,
    run_client_to_peer,
    run_peer_to_client,
    udp_socket,
)

pytestmark = pytest.mark.skipif(
    not NATIVE or batchio._sendmsg is None, reason="no recvmmsg/sendmmsg/sendmsg in this libc"
)

SO_NO_CHECK = 11  # asm-generic/socket.h: UDP without checksums, which GSO refuses


@pytest.fixture(autouse=True)
def gso_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with GSO on and unproven, and leaves the process's switch as it was."""
    monkeypatch.setattr(batchio, "GSO", True)
    monkeypatch.setattr(batchio, "gso_largest", batchio.GSO_BYTES)
    monkeypatch.setattr(batchio, "_gso_proven", False)
    yield


class Calls:
    """Wraps a batch's sendmsg: counts the segmented sends (the kernel does them)."""

    def __init__(self, batch: DatagramBatch) -> None:
        self.count = 0
        self.real = batch._sendmsg
        batch._sendmsg = self

    def __call__(self, *args: object) -> int:
        self.count += 1
        return self.real(*args)


def both_ways(
    scenario: Callable[[DatagramBatch], object], monkeypatch: pytest.MonkeyPatch
) -> tuple[object, int]:
    """The scenario's result with GSO off, which must equal its result with GSO on; and how
    many segmented sends the GSO run made."""
    monkeypatch.setattr(batchio, "GSO", False)
    plain_batch = DatagramBatch()
    plain_calls = Calls(plain_batch)
    plain = scenario(plain_batch)
    assert plain_calls.count == 0
    monkeypatch.setattr(batchio, "GSO", True)
    gso_batch = DatagramBatch()
    gso_calls = Calls(gso_batch)
    segmented = scenario(gso_batch)
    assert segmented == plain
    return plain, gso_calls.count


def payload(index: int, size: int) -> bytes:
    return bytes((index * 7 + k) % 256 for k in range(size))


def send_run(
    batch: DatagramBatch, sock: socket.socket, to: socket.socket, sizes: list[int]
) -> tuple[tuple[int, int], list[tuple[bytes, tuple[str, int]]]]:
    """``sizes`` datagrams, one per slot, through ``batch.send``: what it returned, and what
    ``to`` received."""
    starts = [SLOT * i + HEADROOM for i in range(len(sizes))]
    for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        batch.memory[start : start + size] = payload(i, size)
    result = batch.send(sock, to.getsockname(), starts, list(sizes))
    return result, everything(to)


@pytest.mark.parametrize(
    ("sizes", "sends"),
    [
        ([100] * 50, 1),  # uclient's bursts: one send
        ([100] * 9 + [40], 1),  # a shorter last datagram rides along
        ([1004] * BATCH, 1),  # 1000 B payloads with their ChannelData header: 64,256 bytes
        ([1100] * BATCH, 2),  # 65,507 bytes at most per send: 59 then 5
        ([9000] * 10 + [1], 2),  # 7 then 3 and the short one
        ([100, 100], 1),
        ([100, 200, 100], 0),  # mixed sizes: sendmmsg
        ([100] * 5 + [200], 0),  # a longer last datagram: sendmmsg
        ([40] + [100] * 5, 0),  # a shorter first one: sendmmsg
        ([100] * 5 + [0], 0),  # an empty datagram cannot be a segment
    ],
)
def test_a_run_leaves_as_the_plain_path_sends_it(
    sizes: list[int], sends: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, to = udp_socket(), udp_socket("127.0.0.2")
    to.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        result, made = both_ways(lambda batch: send_run(batch, sock, to, sizes), monkeypatch)
        (packets, sent_bytes), received = result  # type: ignore[misc]
        assert (packets, sent_bytes) == (len(sizes), sum(sizes))
        assert received == [(payload(i, size), sock.getsockname()) for i, size in enumerate(sizes)]
        assert made == sends
    finally:
        sock.close()
        to.close()


def test_client_to_peer_through_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """DatagramIngress: the mixed script (clients, peers, channels, sizes, drops, a Send
    indication) and then uniform bursts from one client to one peer, 100 B and 1000 B,
    the longest run a batch holds: peers receive the same, counters are the same."""
    bursts = [
        [pack_channel_data(0x4000, payload(k, size)) for k in range(BATCH)] for size in (100, 1000)
    ]

    def scenario(batch: DatagramBatch) -> object:
        relay = Relay(batch)
        try:
            mixed = run_client_to_peer(relay)
            for burst in bursts:  # one wake-up each: the 100 B burst, then the 1000 B one
                for datagram in burst:
                    relay.clients[0].sendto(datagram, relay.listener.getsockname())
                relay.ingress.drain()
            peers = [[data for data, _ in everything(peer)] for peer in relay.peers]
            return mixed, peers, counters(relay.server.stats)
        finally:
            relay.close()

    result, made = both_ways(scenario, monkeypatch)
    _, peers, stats = result  # type: ignore[misc]
    assert peers[0] == [datagram[4:] for burst in bursts for datagram in burst]
    assert isinstance(stats, dict) and stats["dropped_packets"][Drop.SEND_ERROR] == 0
    assert made >= 2  # the two bursts at least


def test_peer_to_client_through_the_relay_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """RelayReceiver: the mixed script of the batching tests, then a full batch of 1000 B
    datagrams from one peer and a run that ends shorter, to one client."""

    def scenario(batch: DatagramBatch) -> object:
        relay = Relay(batch)
        try:
            mixed = run_peer_to_client(relay)
            target = relay.relays[1].getsockname()
            for k in range(BATCH):
                relay.peers[0].sendto(payload(k, 1000), target)
            relay.receivers[1].drain()
            for k in range(5):
                relay.peers[1].sendto(payload(k, 100 if k < 4 else 3), target)
            relay.receivers[1].drain()
            received = [data for data, _ in everything(relay.clients[1])]
            return mixed, received, counters(relay.server.stats)
        finally:
            relay.close()

    result, made = both_ways(scenario, monkeypatch)
    _, received, stats = result  # type: ignore[misc]
    expected = [pack_channel_data(0x4000, payload(k, 1000)) for k in range(BATCH)]
    expected += [pack_channel_data(0x4001, payload(k, 100 if k < 4 else 3)) for k in range(5)]
    assert received == expected
    assert isinstance(stats, dict) and stats["dropped_packets"][Drop.SEND_ERROR] == 0
    assert made >= 2


def test_a_refused_run_is_one_send_error_per_datagram(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose relay socket is gone (EBADF) is refused whole: every datagram is one
    send_error with its payload bytes, nothing is tx; the same as the plain path."""
    runs = [
        [pack_channel_data(0x4000, payload(k, size)) for k in range(count)]
        for size, count in ((100, 10), (1000, 3))
    ]

    def scenario(batch: DatagramBatch) -> object:
        relay = Relay(batch)
        try:
            relay.relays[0].close()
            for run in runs:  # a wake-up each
                for datagram in run:
                    relay.clients[0].sendto(datagram, relay.listener.getsockname())
                relay.ingress.drain()
            return counters(relay.server.stats)
        finally:
            relay.close()

    stats, made = both_ways(scenario, monkeypatch)
    assert isinstance(stats, dict)
    assert (stats["cluster_tx_packets"], stats["cluster_tx_bytes"]) == (0, 0)
    assert stats["dropped_packets"][Drop.SEND_ERROR] == 13
    assert stats["dropped_bytes"][Drop.SEND_ERROR] == 10 * 100 + 3 * 1000
    assert sum(stats["dropped_packets"]) == 13
    assert made == 2  # one per run; EBADF is not a reason to try the plain way
    assert batchio.GSO  # a dead socket says nothing about segmentation


def test_a_destination_both_ways_refuse_switches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 0: the kernel refuses the segmented send (EINVAL) and then every plain one; each
    datagram is one send_error, and GSO stays on (the destination, not GSO, was refused)."""
    sock, dead = udp_socket(), ("127.0.0.2", 0)
    try:
        batch = DatagramBatch()
        calls = Calls(batch)
        starts = [SLOT * i + HEADROOM for i in range(5)]
        assert batch.send(sock, dead, starts, [100] * 5) == (0, 0)
        assert calls.count == 1
        assert batchio.GSO and batchio.gso_largest == batchio.GSO_BYTES
    finally:
        sock.close()


@pytest.mark.parametrize("proven", [False, True])
def test_a_kernel_that_refuses_segmentation_falls_back(
    proven: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SO_NO_CHECK: the kernel refuses UDP_SEGMENT (EINVAL) and sends plain datagrams. The run
    leaves the plain way, whole and counted once. If GSO never worked in this process it is
    switched off (later runs make no segmented send); if it did, only this segment size and
    larger ones are given up."""
    monkeypatch.setattr(batchio, "_gso_proven", proven)
    sock, to = udp_socket(), udp_socket("127.0.0.2")
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    try:
        batch = DatagramBatch()
        calls = Calls(batch)
        sizes = [100] * 20 + [30]
        result, received = send_run(batch, sock, to, sizes)
        assert result == (21, 20 * 100 + 30)
        assert received == [(payload(i, s), sock.getsockname()) for i, s in enumerate(sizes)]
        assert calls.count == 1
        assert batchio.GSO is proven
        assert batchio.gso_largest == (99 if proven else batchio.GSO_BYTES)
        result, received = send_run(batch, sock, to, [100] * 3)  # the plain way at once
        assert (result, len(received), calls.count) == ((3, 300), 3, 1)
        if proven:  # smaller segments still go segmented: this socket refuses them too
            result, received = send_run(batch, sock, to, [50] * 3)
            assert (result, len(received), calls.count) == ((3, 150), 3, 2)
    finally:
        sock.close()
        to.close()


def refusing(batch: DatagramBatch, errors: list[int]) -> None:
    """The batch's sendmsg refuses its first sends with ``errors`` (one each, as the kernel's
    errno), then sends for real: a full send buffer or an unreachable route cannot be had on
    loopback on demand."""
    real = batch._sendmsg

    def sendmsg(*args: object) -> int:
        if errors:
            ctypes.set_errno(errors.pop(0))
            return -1
        return real(*args)

    batch._sendmsg = sendmsg


@pytest.mark.parametrize(
    ("error", "left"),
    [
        (errno.ENETUNREACH, 5),  # that send's 59 are lost, the next one's 5 still go
        (errno.EAGAIN, 0),  # a full send buffer: what is left of the run is dropped
    ],
)
def test_a_refused_segmented_send_counts_its_datagrams_only(error: int, left: int) -> None:
    sock, to = udp_socket(), udp_socket("127.0.0.2")
    to.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    try:
        batch = DatagramBatch()
        refusing(batch, [error])
        sizes = [1100] * (BATCH - 1) + [7]  # 59 per send: 59, then 4 and the short one
        result, received = send_run(batch, sock, to, sizes)
        assert result == (left, (left - 1) * 1100 + 7 if left else 0)
        assert received == [
            (payload(i, s), sock.getsockname()) for i, s in enumerate(sizes) if i >= 59 and left
        ]
        assert batchio.GSO
    finally:
        sock.close()
        to.close()


def test_a_refused_gathered_flush_counts_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener's outbox (many allocations) still leaves by one sendmmsg: GSO changes
    nothing there, refused or not."""

    def scenario(batch: DatagramBatch) -> object:
        relay = Relay(batch, gathered=True)
        try:
            mixed = run_peer_to_client(relay)
            relay.listener.close()
            for receiver, relay_sock in zip(relay.receivers, relay.relays, strict=True):
                relay.peers[0].sendto(b"lost", relay_sock.getsockname())
                receiver.drain()
            relay.end_turn()
            return mixed, counters(relay.server.stats)
        finally:
            relay.close()

    result, made = both_ways(scenario, monkeypatch)
    _, stats = result  # type: ignore[misc]
    assert isinstance(stats, dict) and stats["dropped_packets"][Drop.SEND_ERROR] == 3
    assert made == 0


def test_the_kernel_is_asked_about_segmentation_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel older than UDP_SEGMENT ignores the control message and would send a run as
    one datagram: the probe (getsockopt) must say no there, yes here (Linux 4.18 on)."""
    assert batchio._kernel_segments() is True

    class OldKernel(socket.socket):
        def getsockopt(self, *args: object) -> int:  # type: ignore[override]
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    with monkeypatch.context() as patch:
        patch.setattr(batchio.socket, "socket", OldKernel)
        assert batchio._kernel_segments() is False
    monkeypatch.setattr(batchio, "_sendmsg", None)  # no libc sendmsg: no GSO either
    assert batchio._kernel_segments() is False


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True), (None, True)])
def test_the_environment_can_keep_gso_off(value: str | None, on: bool) -> None:
    """STUNNER_UDP_GSO=0 (for packet captures that count datagrams) keeps it off."""
    env = {k: v for k, v in os.environ.items() if k != batchio.GSO_ENV}
    if value is not None:
        env[batchio.GSO_ENV] = value
    code = "from stunner import batchio; print(batchio.GSO)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(on)
