"""The batched UDP relay path puts the same bytes on the wire as the one-call-per-datagram path,
and counts the same, for traffic that mixes clients, peers, channels, sizes and drops.

Each scenario runs on real loopback sockets: with recvmmsg/sendmmsg (``native``), with
recvfrom_into/sendto (``portable``), and peer to client also ``gathered``: through the
listener's ClientOutbox, whose datagrams leave with one sendmmsg at the end of a loop turn
(here the test ends the turn: the outbox's ``call_soon`` is a list the test runs). What every
socket received, in order, and every counter must be identical, and equal to what the codec
builds.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from stunner.auth import PlaintextAuth
from stunner.batchio import BATCH, NATIVE, DatagramBatch
from stunner.config import LimitsConfig
from stunner.stats import Drop, ListenerStats
from stunner.stun import Class, Message, Method, pack_channel_data, parse_message
from stunner.turn import Allocation, DatagramClient, TurnServer
from stunner.turn.datapath import LISTENER_READS, ClientOutbox, DatagramIngress, RelayReceiver
from stunner.udp import DatagramSocket

SIZES = (0, 1, 3, 4, 100, 1000, 1203, 9000)
MODES = ("native", "portable")


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)
    return sock


def everything(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    """What reached ``sock``, in order (loopback delivers at send time: nothing is late)."""
    out = []
    while True:
        try:
            data, addr = sock.recvfrom(70000)
        except BlockingIOError:
            return out
        out.append((data, addr))


def batch_for(mode: str) -> DatagramBatch:
    if mode == "native" and not NATIVE:
        pytest.skip("no recvmmsg/sendmmsg in this libc")
    return DatagramBatch(native=mode == "native")


def counters(stats: ListenerStats) -> dict[str, object]:
    return {
        name: list(value) if isinstance(value, list) else value
        for name, value in ((name, getattr(stats, name)) for name in ListenerStats.__slots__)
        if "packets" in name or "bytes" in name
    }


class Relay:
    """Three UDP clients with allocations on one listener socket; each relays over its own
    relay socket to two peers (channels 0x4000, 0x4001); client 2 also has channel 0x4002
    bound to a peer whose permission is gone."""

    def __init__(self, batch: DatagramBatch, gathered: bool = False) -> None:
        self.listener = udp_socket()
        self.server_stats = ListenerStats()
        self.turn: list[Callable[[], object]] = []  # what the loop would run at the turn's end
        self.outbox = (
            ClientOutbox(self.listener, self.server_stats, self.turn.append) if gathered else None
        )
        self.clients = [udp_socket() for _ in range(3)]
        self.relays = [udp_socket() for _ in range(3)]
        self.peers = [udp_socket(), udp_socket("127.0.0.2")]
        self.server = TurnServer(
            "t", self.server_stats, PlaintextAuth("r", "u", "p"), lambda ip: True, "127.0.0.1",
            0, 0, limits=LimitsConfig(udp_amplification_guard=False),
        )  # fmt: skip
        self.receivers = []
        for client, relay in zip(self.clients, self.relays, strict=True):
            udp_client = DatagramClient(self.listener, client.getsockname(), self.outbox)
            alloc = Allocation(udp_client, "u")
            alloc.relay = SimpleNamespace(sock=relay, sendto=relay.sendto)  # type: ignore[assignment]
            for channel, peer in zip((0x4000, 0x4001), self.peers, strict=True):
                alloc.permit(peer.getsockname()[0], 1e18)
                alloc.bind_channel(channel, peer.getsockname(), 1e18)
            self.server.allocations[client.getsockname()] = alloc
            self.receivers.append(RelayReceiver(alloc, relay, self.server.stats, batch))
        gone = self.server.allocations[self.clients[2].getsockname()]
        gone.permit("127.0.0.3", 1e18)
        gone.bind_channel(0x4002, ("127.0.0.3", 9), 1e18)
        gone.revoke("127.0.0.3")
        self.ingress = DatagramIngress(self.server, self.listener, batch)
        self.ingress.outbox = self.outbox

    def end_turn(self) -> None:
        """What the event loop does after the turn's reader callbacks: the scheduled flush."""
        while self.turn:
            self.turn.pop(0)()

    def sockets(self) -> list[socket.socket]:
        return [self.listener, *self.clients, *self.relays, *self.peers]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


@pytest.fixture
def relays() -> Iterator[dict[str, Relay]]:
    made: dict[str, Relay] = {}
    yield made
    for relay in made.values():
        relay.close()


def client_script() -> list[tuple[int, bytes]]:
    """(client index, datagram): bursts and interleaving, both channels, every size, the
    drops (unknown channel, no permission, a lying length) and a Send indication."""
    script: list[tuple[int, bytes]] = []
    for n, size in enumerate(SIZES):
        payload = bytes((n + k) % 256 for k in range(size))
        script.append((0, pack_channel_data(0x4000, payload)))  # a burst from client 0 ...
        script.append((0, pack_channel_data(0x4000, payload[::-1])))
        script.append((1, pack_channel_data(0x4000 + n % 2, payload)))  # ... interleaved
        script.append((2, pack_channel_data(0x4001, payload)))
        script.append((0, pack_channel_data(0x4001, payload)))  # same relay, other peer
    script.insert(7, (1, pack_channel_data(0x4005, b"unbound")))
    script.insert(9, (2, pack_channel_data(0x4002, b"no permission")))
    script.insert(11, (0, b"\x40\x00\xff\xffshort"))
    send = Message(Method.SEND, Class.INDICATION)
    send.attributes["DATA"] = b"in order"
    script.insert(13, (0, b""))  # placeholder for the Send indication (needs the peer)
    return script


def run_client_to_peer(relay: Relay) -> tuple[list[list[bytes]], dict[str, object]]:
    send = Message(Method.SEND, Class.INDICATION)
    send.attributes["XOR-PEER-ADDRESS"] = [relay.peers[0].getsockname()]
    send.attributes["DATA"] = b"in order"
    for index, datagram in client_script():
        relay.clients[index].sendto(datagram or send.encode(), relay.listener.getsockname())
    while True:  # a wake-up takes at most BATCH: drain until nothing is left
        before = relay.server.stats.rx_packets
        relay.ingress.drain()
        if relay.server.stats.rx_packets == before:
            break
    received = [[data for data, _ in everything(peer)] for peer in relay.peers]
    return received, counters(relay.server.stats)


@pytest.mark.skipif(not NATIVE, reason="no recvmmsg/sendmmsg in this libc")
def test_client_to_peer_batched_matches_one_by_one(relays: dict[str, Relay]) -> None:
    results = {}
    for mode in MODES:
        relays[mode] = Relay(batch_for(mode))
        results[mode] = run_client_to_peer(relays[mode])
    assert results["native"] == results["portable"]
    received, stats = results["native"]
    # What each peer must get, from the codec's side: payloads in the clients' order.
    expected: list[list[bytes]] = [[], []]
    for _, datagram in client_script():
        if not datagram:
            expected[0].append(b"in order")
            continue
        channel = int.from_bytes(datagram[:2], "big")
        length = int.from_bytes(datagram[2:4], "big")
        if channel in (0x4000, 0x4001) and length <= len(datagram) - 4:
            expected[channel - 0x4000].append(datagram[4 : 4 + length])
    assert received == expected
    relayed = sum(len(p) for p in expected)
    assert stats["cluster_tx_packets"] == relayed
    assert stats["cluster_tx_bytes"] == sum(map(len, expected[0] + expected[1]))
    dropped = stats["dropped_packets"]
    assert isinstance(dropped, list)
    assert (dropped[Drop.NO_CHANNEL], dropped[Drop.NO_PERMISSION], dropped[Drop.MALFORMED]) == (
        1,
        1,
        1,
    )
    assert dropped[Drop.SEND_ERROR] == 0
    assert stats["rx_packets"] == len(client_script())


def run_peer_to_client(relay: Relay) -> tuple[list[list[bytes]], dict[str, object]]:
    stranger = udp_socket("127.0.0.4")  # no permission on any allocation
    try:
        for n, size in enumerate(SIZES):
            payload = bytes((3 * n + k) % 256 for k in range(size))
            for which, relay_sock in enumerate(relay.relays):
                target = relay_sock.getsockname()
                relay.peers[0].sendto(payload, target)
                relay.peers[1].sendto(payload[::-1], target)
                if n == 2 and which == 1:
                    stranger.sendto(b"dropped", target)
        for receiver in relay.receivers:
            receiver.drain()
        relay.end_turn()
        received = [[data for data, _ in everything(client)] for client in relay.clients]
        return received, counters(relay.server.stats)
    finally:
        stranger.close()


@pytest.mark.skipif(not NATIVE, reason="no recvmmsg/sendmmsg in this libc")
def test_peer_to_client_batched_matches_one_by_one(relays: dict[str, Relay]) -> None:
    results = {}
    for mode in MODES:
        relays[mode] = Relay(batch_for(mode))
        results[mode] = run_peer_to_client(relays[mode])
    relays["gathered"] = Relay(batch_for("native"), gathered=True)
    results["gathered"] = run_peer_to_client(relays["gathered"])
    assert results["native"] == results["portable"] == results["gathered"]
    received, stats = results["native"]
    expected = []
    for n, size in enumerate(SIZES):
        payload = bytes((3 * n + k) % 256 for k in range(size))
        expected += [pack_channel_data(0x4000, payload), pack_channel_data(0x4001, payload[::-1])]
    assert received == [expected] * 3
    assert stats["tx_packets"] == 3 * len(expected)
    assert stats["tx_bytes"] == 3 * sum(map(len, expected))
    assert stats["cluster_rx_packets"] == 3 * len(expected)
    dropped = stats["dropped_packets"]
    assert isinstance(dropped, list) and dropped[Drop.NO_PERMISSION] == 1
    assert sum(dropped) == 1


@pytest.mark.parametrize("mode", MODES)
def test_runs_to_alternating_peers_keep_their_destination(mode: str) -> None:
    """Runs of several datagrams to one peer, then another, then the first again, in one
    batch: every header of a run names that run's peer (sendmmsg reuses the headers)."""
    batch = batch_for(mode)
    relay = Relay(batch)
    try:
        client = relay.clients[0]
        script = [(0x4000, b"a%d" % k) for k in range(5)]
        script += [(0x4001, b"b%d" % k) for k in range(3)]
        script += [(0x4000, b"c%d" % k) for k in range(2)]
        for channel, payload in script:
            client.sendto(pack_channel_data(channel, payload), relay.listener.getsockname())
        relay.ingress.drain()
        got = [everything(peer) for peer in relay.peers]
        relay_addr = relay.relays[0].getsockname()
        assert got[0] == [(p, relay_addr) for c, p in script if c == 0x4000]
        assert got[1] == [(p, relay_addr) for c, p in script if c == 0x4001]
    finally:
        relay.close()


@pytest.mark.parametrize("mode", MODES)
def test_sources_are_decoded_exactly(mode: str) -> None:
    """The batch turns each source's raw sockaddr into (host, port), cached or not: high
    ports, other hosts, and the same source again after the cache was cleared."""
    batch = batch_for(mode)
    receiver = udp_socket()
    senders = [udp_socket(host) for host in ("127.0.0.1", "127.0.0.2", "127.1.2.3")]
    high = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for port in (65535, 65534, 40000, 33000):
            try:
                high.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        senders.append(high)
        for _ in range(2):
            for sender in senders:
                sender.sendto(b"x", receiver.getsockname())
            sizes, addresses = batch.receive(receiver)
            assert sizes == [1] * len(senders)
            assert addresses == [sender.getsockname() for sender in senders]
            assert all(isinstance(host, str) and isinstance(port, int) for host, port in addresses)
            batch._addresses.clear()
    finally:
        receiver.close()
        for sender in senders:
            sender.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_full_batch_then_the_rest(mode: str) -> None:
    """More datagrams than one wake-up reads: LISTENER_READS full batches first, the rest on
    the next drain, in order, and each run's refusals counted exactly (here: none)."""
    batch = batch_for(mode)
    relay = Relay(batch)
    try:
        client = relay.clients[1]
        count = LISTENER_READS * BATCH + 7
        for k in range(count):
            client.sendto(
                pack_channel_data(0x4001, k.to_bytes(2, "big")), relay.listener.getsockname()
            )
        relay.ingress.drain()
        assert relay.server.stats.rx_packets == LISTENER_READS * BATCH
        relay.ingress.drain()
        got = [data for data, _ in everything(relay.peers[1])]
        assert got == [k.to_bytes(2, "big") for k in range(count)]
        stats = relay.server.stats
        assert (stats.cluster_tx_packets, stats.cluster_tx_bytes) == (count, 2 * count)
        assert stats.rx_packets == count
        assert sum(stats.dropped_packets) == 0
    finally:
        relay.close()


def test_the_stun_answer_is_what_the_server_builds() -> None:
    """STUN is copied out of the batch: a Binding request amid ChannelData gets its answer."""
    relay = Relay(batch_for("native" if NATIVE else "portable"))
    try:
        client = relay.clients[0]
        client.sendto(pack_channel_data(0x4000, b"before"), relay.listener.getsockname())
        client.sendto(Message(Method.BINDING, Class.REQUEST).encode(), relay.listener.getsockname())
        client.sendto(pack_channel_data(0x4000, b"after"), relay.listener.getsockname())
        relay.ingress.drain()
        assert [d for d, _ in everything(relay.peers[0])] == [b"before", b"after"]
        answer = parse_message(everything(client)[0][0])
        assert (answer.method, answer.msg_class) == (Method.BINDING, Class.SUCCESS)
        assert answer.attributes["XOR-MAPPED-ADDRESS"] == client.getsockname()
    finally:
        relay.close()


@pytest.mark.parametrize("mode", MODES)
def test_interleaved_runs_of_one_count_refusals_exactly(mode: str) -> None:
    """Clients that interleave make runs of one datagram (sent without the batch's call);
    one whose relay socket is gone (EBADF) loses its datagrams as send errors, counted with
    their payload bytes, while the others' still leave, in order."""
    relay = Relay(batch_for(mode))
    try:
        relay.relays[0].close()  # client 0's relay socket: every send is refused
        script = []
        for k in range(6):
            for index in (0, 1, 2):
                script.append((index, pack_channel_data(0x4000, b"%d-%d" % (index, k) * (k + 1))))
        script += [(0, pack_channel_data(0x4000, b"run")), (0, pack_channel_data(0x4000, b"x"))]
        for index, datagram in script:
            relay.clients[index].sendto(datagram, relay.listener.getsockname())
        relay.ingress.drain()
        got = [data for data, _ in everything(relay.peers[0])]
        left = [d[4:] for i, d in script if i != 0]
        refused = [d[4:] for i, d in script if i == 0]
        assert got == left
        stats = relay.server.stats
        assert (stats.cluster_tx_packets, stats.cluster_tx_bytes) == (
            len(left),
            sum(map(len, left)),
        )
        assert stats.dropped_packets[Drop.SEND_ERROR] == len(refused)
        assert stats.dropped_bytes[Drop.SEND_ERROR] == sum(map(len, refused))
        assert sum(stats.dropped_packets) == len(refused)
    finally:
        relay.close()


@pytest.mark.parametrize("mode", MODES)
def test_peer_to_client_single_and_runs_count_refusals_exactly(mode: str) -> None:
    """A UDP client's run of one frame leaves by sendto (without the run sender); whether one
    or several, a frame the kernel refuses is a send error with its ChannelData bytes, and
    the frames that left are tx, byte for byte what the codec builds."""
    relay = Relay(batch_for(mode))
    try:
        receiver, target = relay.receivers[0], relay.relays[0].getsockname()
        relay.peers[0].sendto(b"one", target)
        receiver.drain()
        for payload in (b"two", b"three"):
            relay.peers[1].sendto(payload, target)
        receiver.drain()
        assert [d for d, _ in everything(relay.clients[0])] == [
            pack_channel_data(0x4000, b"one"),
            pack_channel_data(0x4001, b"two"),
            pack_channel_data(0x4001, b"three"),
        ]
        stats = relay.server.stats
        assert (stats.tx_packets, stats.tx_bytes) == (3, 4 * 3 + 3 + 3 + 5)
        relay.listener.close()  # the client's way out is gone: every frame is refused
        relay.peers[0].sendto(b"single", target)
        receiver.drain()
        for payload in (b"a", b"bc"):
            relay.peers[0].sendto(payload, target)
        receiver.drain()
        assert (stats.tx_packets, stats.tx_bytes) == (3, 4 * 3 + 3 + 3 + 5)
        assert stats.dropped_packets[Drop.SEND_ERROR] == 3
        assert stats.dropped_bytes[Drop.SEND_ERROR] == 4 * 3 + 6 + 1 + 2
        assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (6, 3 + 3 + 5 + 6 + 1 + 2)
    finally:
        relay.close()


# Peer to client through the listener's outbox (ClientOutbox): gathered over a loop turn.


@pytest.fixture
def gathered() -> Iterator[Relay]:
    if not NATIVE:
        pytest.skip("no recvmmsg/sendmmsg in this libc: nothing to gather")
    relay = Relay(DatagramBatch(), gathered=True)
    yield relay
    relay.close()


def frames_to(relay: Relay, payloads: list[bytes], peer: int = 0) -> list[list[bytes]]:
    """Each payload sent by peer ``peer`` to every relay socket; what each client must get."""
    for payload in payloads:
        for relay_sock in relay.relays:
            relay.peers[peer].sendto(payload, relay_sock.getsockname())
    return [[pack_channel_data(0x4000 + peer, p) for p in payloads] for _ in relay.clients]


def test_gathered_frames_count_as_tx_when_they_leave(gathered: Relay) -> None:
    """Three relay sockets' wake-ups wait in the outbox until the turn ends: nothing left and
    no tx before; afterwards every frame, byte for byte, and tx counted once."""
    expected = frames_to(gathered, [b"one", b"two!"])
    for receiver in gathered.receivers:
        receiver.drain()
    stats = gathered.server.stats
    assert gathered.outbox is not None and gathered.outbox.gather.used == 6
    assert [everything(client) for client in gathered.clients] == [[], [], []]
    assert (stats.tx_packets, stats.tx_bytes) == (0, 0)
    assert (stats.cluster_rx_packets, stats.cluster_rx_bytes) == (6, 3 * 7)
    assert len(gathered.turn) == 1  # one flush scheduled for the turn, not one per wake-up
    gathered.end_turn()
    assert [[d for d, _ in everything(c)] for c in gathered.clients] == expected
    sources = {addr for client in gathered.clients for _, addr in everything(client)}
    assert not sources  # nothing twice
    assert (stats.tx_packets, stats.tx_bytes) == (6, 6 * 4 + 3 * 7)
    assert sum(stats.dropped_packets) == 0


def test_gathered_frames_leave_through_the_listener(gathered: Relay) -> None:
    frames_to(gathered, [b"x"])
    for receiver in gathered.receivers:
        receiver.drain()
    gathered.end_turn()
    for client in gathered.clients:
        assert [addr for _, addr in everything(client)] == [gathered.listener.getsockname()]


def test_gathered_frames_refused_at_the_flush_are_one_send_error_each(gathered: Relay) -> None:
    """The listener socket is gone when the turn ends: every waiting frame is one send_error
    drop with its ChannelData bytes, none is tx."""
    frames_to(gathered, [b"abc", b"de"])
    for receiver in gathered.receivers:
        receiver.drain()
    gathered.listener.close()
    gathered.end_turn()
    stats = gathered.server.stats
    assert (stats.tx_packets, stats.tx_bytes) == (0, 0)
    assert stats.dropped_packets[Drop.SEND_ERROR] == 6
    assert stats.dropped_bytes[Drop.SEND_ERROR] == 6 * 4 + 3 * 5
    assert sum(stats.dropped_packets) == 6
    assert gathered.outbox is not None and gathered.outbox.gather.used == 0


def test_gathered_frames_outlive_their_relay_socket(gathered: Relay) -> None:
    """An allocation deleted (relay socket closed, receiver gone) while its frames wait: they
    still leave, once."""
    expected = frames_to(gathered, [b"late", b"later"])
    for receiver in gathered.receivers:
        receiver.drain()
    gathered.receivers.clear()  # the receivers and their sockaddr buffers may be freed now
    for relay_sock in gathered.relays:
        relay_sock.close()
    gc.collect()
    gathered.end_turn()
    assert [[d for d, _ in everything(c)] for c in gathered.clients] == expected
    assert gathered.server.stats.tx_packets == 6


def test_the_outbox_is_bounded_and_keeps_each_clients_order(gathered: Relay) -> None:
    """More frames in one turn than the outbox has slots: it sends when full (never more than
    BATCH wait; a wake-up reads only as many as are free, the rest on the socket's next
    wake-up), then the rest at the end of the turn; each client gets its own in order."""
    payloads = [k.to_bytes(2, "big") for k in range(BATCH // 2 + 5)]
    expected = frames_to(gathered, payloads)
    assert gathered.outbox is not None
    for _ in range(2):  # the loop calls a socket again while it stays readable
        for receiver in gathered.receivers:
            receiver.drain()
            assert gathered.outbox.gather.used <= BATCH
    gathered.end_turn()
    assert [[d for d, _ in everything(c)] for c in gathered.clients] == expected
    stats = gathered.server.stats
    assert stats.tx_packets == 3 * len(payloads)
    assert stats.tx_bytes == 3 * (6 * len(payloads))


def test_nothing_overtakes_a_gathered_frame(gathered: Relay) -> None:
    """A Data indication (a permission without a channel) and a STUN answer leave the listener
    socket at once: what waits in the outbox goes first."""
    loose = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        loose.bind(("127.0.0.5", 0))
        alloc = gathered.server.allocations[gathered.clients[0].getsockname()]
        alloc.permit("127.0.0.5", 1e18)
        target = gathered.relays[0].getsockname()
        gathered.peers[0].sendto(b"first", target)
        gathered.receivers[0].drain()  # waits in the outbox
        gathered.peers[0].sendto(b"second", target)
        loose.sendto(b"indicated", target)
        gathered.peers[0].sendto(b"third", target)
        gathered.receivers[0].drain()  # the indication sends what waits, then itself, then third
        client = gathered.clients[0]
        client.sendto(
            Message(Method.BINDING, Class.REQUEST).encode(), gathered.listener.getsockname()
        )
        gathered.ingress.drain()  # the answer
        gathered.end_turn()
        got = [d for d, _ in everything(client)]
        assert got[:2] == [
            pack_channel_data(0x4000, b"first"),
            pack_channel_data(0x4000, b"second"),
        ]
        indication = parse_message(got[2])
        assert (indication.method, indication.msg_class) == (Method.DATA, Class.INDICATION)
        assert indication.attributes["DATA"] == b"indicated"
        assert got[3] == pack_channel_data(0x4000, b"third")
        answer = parse_message(got[4])
        assert (answer.method, answer.msg_class) == (Method.BINDING, Class.SUCCESS)
        assert len(got) == 5
        stats = gathered.server.stats
        assert stats.tx_packets == 5
        assert stats.tx_bytes == sum(map(len, got))
    finally:
        loose.close()


def test_turns_of_one_wakeup_send_at_once_then_probe(gathered: Relay) -> None:
    """After a turn whose flush carried one wake-up, the next PROBE wake-ups send at once (no
    flush scheduled); the one after gathers again. The bytes and counters are the same."""
    outbox, receiver, client = gathered.outbox, gathered.receivers[0], gathered.clients[0]
    assert outbox is not None
    target = gathered.relays[0].getsockname()
    gathered.peers[0].sendto(b"alone", target)
    receiver.drain()
    gathered.end_turn()
    assert [d for d, _ in everything(client)] == [pack_channel_data(0x4000, b"alone")]
    assert outbox.direct == ClientOutbox.PROBE
    for k in range(ClientOutbox.PROBE):
        gathered.peers[0].sendto(b"%d" % k, target)
        receiver.drain()
        assert not gathered.turn and outbox.gather.used == 0
        assert [d for d, _ in everything(client)] == [pack_channel_data(0x4000, b"%d" % k)]
    gathered.peers[0].sendto(b"probe", target)
    receiver.drain()
    assert len(gathered.turn) == 1 and outbox.gather.used == 1
    gathered.end_turn()
    assert [d for d, _ in everything(client)] == [pack_channel_data(0x4000, b"probe")]
    stats = gathered.server.stats
    assert stats.tx_packets == ClientOutbox.PROBE + 2
    assert sum(stats.dropped_packets) == 0


def test_the_listener_sends_what_waits_before_it_closes(gathered: Relay) -> None:
    """DatagramSocket.close runs ``before_close`` (the ingress's flush) before the socket goes:
    a listener stopped mid-turn loses none of the waiting frames."""

    async def scenario() -> None:
        listener = DatagramSocket(
            gathered.listener, gathered.ingress.drain, before_close=gathered.ingress.flush
        )
        expected = frames_to(gathered, [b"bye"])
        for receiver in gathered.receivers:
            receiver.drain()
        listener.close()
        assert [[d for d, _ in everything(c)] for c in gathered.clients] == expected

    asyncio.run(scenario())
    assert gathered.server.stats.tx_packets == 3
