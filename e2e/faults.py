"""The fault catalogue: plausible counting and lifecycle bugs, seeded one at a time into a
copy of the tree by `nox -s mutants` (e2e/mutate.py). The e2e scenarios alone must fail on
every one of them.

Each fault is data: an id, what it does, and one or more edits, each an exact snippet of the
current code and its replacement. The applier refuses a fault whose snippet does not occur
exactly once, and tests/unit/test_mutant_catalogue.py checks that every snippet still
applies, so a refactor that moves the code breaks that test: re-target the snippet (copy the
new code's lines), keep the fault's meaning. `killers` are the e2e test modules expected to
catch it; the runner tries those first and the rest of the scenarios only if they miss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    """Replace `old` (must occur exactly once in `path`) with `new`."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Fault:
    id: str
    description: str
    edits: tuple[Edit, ...]
    killers: tuple[str, ...]


LISTENER = "stunner/listener.py"
SERVER = "stunner/turn/server.py"
RELAY = "stunner/turn/relay.py"
BATCHIO = "stunner/batchio.py"
DAEMON = "stunner/daemon.py"

FAULTS: tuple[Fault, ...] = (
    Fault(
        "cluster-direction-swap",
        "cluster rx and tx swapped where they are counted (peer-to-client as tx, "
        "client-to-peer as rx)",
        (
            Edit(
                RELAY,
                "            stats.cluster_rx_packets += rx_packets\n"
                "            stats.cluster_rx_bytes += rx_bytes\n",
                "            stats.cluster_tx_packets += rx_packets\n"
                "            stats.cluster_tx_bytes += rx_bytes\n",
            ),
            Edit(
                LISTENER,
                "            stats.cluster_tx_packets += tx_packets\n"
                "            stats.cluster_tx_bytes += tx_bytes\n",
                "            stats.cluster_rx_packets += tx_packets\n"
                "            stats.cluster_rx_bytes += tx_bytes\n",
            ),
            Edit(
                LISTENER,
                "    stats.cluster_tx_packets += 1\n    stats.cluster_tx_bytes += length\n",
                "    stats.cluster_rx_packets += 1\n    stats.cluster_rx_bytes += length\n",
            ),
            Edit(
                SERVER,
                "        self.stats.cluster_tx_packets += 1\n"
                "        self.stats.cluster_tx_bytes += len(payload)\n",
                "        self.stats.cluster_rx_packets += 1\n"
                "        self.stats.cluster_rx_bytes += len(payload)\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "tcp-packets-per-read",
        "TCP/TLS listener rx packets counted per read call, not per frame (upstream's way)",
        (
            Edit(
                LISTENER,
                "        stats.rx_packets += 1\n        stats.rx_bytes += len(frame)\n",
                "        stats.rx_bytes += len(frame)\n",
            ),
            Edit(
                LISTENER,
                "        # reads goes through the buffer.\n",
                "        # reads goes through the buffer.\n        self.stats.rx_packets += 1\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "partial-frame-counted",
        "a read that ends in the middle of a frame counts one more packet",
        (
            Edit(
                LISTENER,
                "        if pos < size:\n            self.buffer += data[pos:]\n",
                "        if pos < size:\n            self.stats.rx_packets += 1\n"
                "            self.buffer += data[pos:]\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "cluster-rx-without-permission",
        "datagrams from peers without a permission counted as cluster rx before the drop",
        (
            Edit(
                RELAY,
                "                if addr[0] not in permissions:\n"
                "                    continue  # RFC 8656 11.3: no permission, silently dropped,"
                " not counted\n"
                "                rx_packets += 1\n"
                "                rx_bytes += size\n",
                "                rx_packets += 1\n"
                "                rx_bytes += size\n"
                "                if addr[0] not in permissions:\n"
                "                    continue\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "expiry-keeps-gauges",
        "an expired allocation is dropped from the table without its gauges going down",
        (
            Edit(
                SERVER,
                '                logger.info("%s: %r expired", self.name, alloc)\n'
                "                self.delete_allocation(alloc)\n",
                '                logger.info("%s: %r expired", self.name, alloc)\n'
                "                del self.allocations[alloc.key]\n"
                "                alloc.close()\n"
                "                self.quotas.remove(alloc.username)\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "no-sweeper",
        "a listener's server never starts its sweeper: allocations never expire",
        (
            Edit(
                LISTENER,
                "        self.server.start()\n        logger.info(",
                "        logger.info(",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "tcp-close-keeps-allocation",
        "a TCP/TLS connection that closes without Refresh(0) leaves its allocation in place",
        (
            Edit(
                SERVER,
                "        alloc = self.allocations.get(key)\n"
                "        if alloc is not None:\n"
                "            self.delete_allocation(alloc)\n",
                "        alloc = self.allocations.get(key)\n"
                "        if alloc is not None:\n"
                "            alloc.close()  # the relay socket goes, the table entry stays\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "reset-keeps-connection-gauge",
        "only an orderly close takes a TCP/TLS connection off the gauge (a reset does not)",
        (
            Edit(
                LISTENER,
                "    def connection_lost(self, exc: Exception | None) -> None:\n"
                "        self.stats.connections -= 1\n",
                "    def connection_lost(self, exc: Exception | None) -> None:\n"
                "        if exc is None:\n"
                "            self.stats.connections -= 1\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "restart-resets-counters",
        "a listener restarted by a reload gets fresh counters (its series go down)",
        (
            Edit(
                DAEMON,
                "        stats = self.stats.setdefault(cfg.name, ListenerStats())\n",
                "        stats = self.stats[cfg.name] = ListenerStats()\n",
            ),
        ),
        ("test_restart",),
    ),
    Fault(
        "restart-keeps-allocations",
        "a listener stopped for a restart leaves its allocations (and gauges) behind",
        (
            Edit(
                LISTENER,
                "    async def stop(self) -> None:\n        self.server.close()\n",
                "    async def stop(self) -> None:\n",
            ),
        ),
        ("test_restart",),
    ),
    Fault(
        "removed-listener-keeps-series",
        "a listener removed by a reload keeps its series",
        (
            Edit(
                DAEMON,
                "            del self.stats[removed.name]\n",
                "            pass  # its stats (and series) stay\n",
            ),
        ),
        ("test_reload",),
    ),
    Fault(
        "guard-withheld-counted",
        "an answer the amplification guard withheld is counted as tx",
        (
            Edit(
                SERVER,
                '                return b""  # dropped: the client\'s retransmission earns the'
                " credit\n",
                "                self.stats.tx_packets += 1\n"
                "                self.stats.tx_bytes += len(data)\n"
                '                return b""\n',
            ),
        ),
        ("test_shapes", "test_traffic"),
    ),
    Fault(
        "refused-send-counted-udp",
        "a ChannelData datagram the kernel refused counted as relayed (plain sendto path)",
        (
            Edit(
                BATCHIO,
                "            except OSError:\n"
                "                return 0, 0\n"
                "            return 1, length\n",
                "            except OSError:\n                return 1, length\n"
                "            return 1, length\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "refused-send-counted-batch",
        "a datagram sendmmsg refused counted as relayed (batched path)",
        (
            Edit(
                BATCHIO,
                "                first += 1  # this one was refused: skip it, send the rest\n",
                "                packets += 1  # counted although refused\n"
                "                sent_bytes += lengths[first]\n"
                "                first += 1\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "refused-send-counted-indication",
        "a Send indication's payload the kernel refused counted as relayed",
        (
            Edit(
                SERVER,
                "            return  # dropped by the kernel: not relayed, not counted\n",
                "            pass  # counted as if it had left\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "refused-send-counted-stream",
        "a TCP/TLS client's ChannelData the kernel refused counted as relayed",
        (
            Edit(
                LISTENER,
                "        return  # dropped by the kernel (full send buffer, unreachable): not "
                "relayed\n",
                "        pass  # counted as if it had left\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "udp-gauge-counts-nothing",
        "the UDP listener connection gauge does not follow allocations",
        (
            Edit(
                SERVER,
                "        if not client.stream:\n"
                "            stats.connections += 1\n"
                "            stats.connections_total += 1\n",
                "        if not client.stream:\n            stats.connections_total += 1\n",
            ),
            Edit(
                SERVER,
                "        if not alloc.stream:\n            stats.connections -= 1\n",
                "",
            ),
        ),
        ("test_traffic", "test_waves"),
    ),
    Fault(
        "delete-keeps-cluster-gauge",
        "a deleted allocation's relay connection stays on the cluster gauge",
        (
            Edit(
                SERVER,
                "        stats.allocations -= 1\n        stats.cluster_connections -= 1\n",
                "        stats.allocations -= 1\n",
            ),
        ),
        ("test_traffic",),
    ),
    Fault(
        "stream-tx-bytes-unpadded",
        "frames to TCP/TLS clients (and Data indications) counted as header + payload, "
        "without padding or attributes",
        (
            Edit(
                RELAY,
                "                if client.send(frame):\n"
                "                    tx_packets += 1\n"
                "                    tx_bytes += len(frame)\n",
                "                if client.send(frame):\n"
                "                    tx_packets += 1\n"
                "                    tx_bytes += 4 + size\n",
            ),
        ),
        ("test_traffic", "test_shapes"),
    ),
)

BY_ID = {f.id: f for f in FAULTS}
assert len(BY_ID) == len(FAULTS), "fault ids must be unique"
