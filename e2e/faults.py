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
DATAPATH = "stunner/turn/datapath.py"
TELEMETRY = "stunner/telemetry.py"
BATCHIO = "stunner/batchio.py"
DAEMON = "stunner/daemon.py"


def _cluster_swap(indent: int, direction: str, packets: str, size: str) -> Edit:
    """The two lines that count a cluster ``direction`` (rx or tx), counted as the other one."""
    other = "tx" if direction == "rx" else "rx"
    pad = " " * indent

    def lines(way: str) -> str:
        return (
            f"{pad}stats.cluster_{way}_packets += {packets}\n"
            f"{pad}stats.cluster_{way}_bytes += {size}\n"
        )

    return Edit(DATAPATH, lines(direction), lines(other))


FAULTS: tuple[Fault, ...] = (
    Fault(
        "cluster-direction-swap",
        "cluster rx and tx swapped where they are counted (peer-to-client as tx, "
        "client-to-peer as rx)",
        (
            _cluster_swap(12, "rx", "rx_packets", "rx_bytes"),
            _cluster_swap(12, "tx", "tx_packets", "tx_bytes"),
            _cluster_swap(12, "tx", "relayed", "relayed_bytes"),
            _cluster_swap(12, "tx", "1", "len(payload)"),
            _cluster_swap(16, "rx", "1", "size"),
            _cluster_swap(12, "rx", "received", "received_bytes"),
            _cluster_swap(8, "rx", "entry - first", "relayed_bytes"),
            _cluster_swap(12, "rx", "1", "size"),
        ),
        ("test_shapes",),
    ),
    Fault(
        "tcp-packets-per-read",
        "TCP/TLS listener rx packets counted per read call, not per frame (upstream's way)",
        (
            Edit(
                DATAPATH,
                "            stats.rx_packets += rx\n",
                "            stats.rx_packets += 1  # one per read call\n",
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
                "        if pos < len(data):\n            self.buffer += data[pos:]\n",
                "        if pos < len(data):\n            self.server.stats.rx_packets += 1\n"
                "            self.buffer += data[pos:]\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "cluster-rx-without-permission",
        "datagrams from peers without a permission counted as cluster rx before the drop "
        "(so counted twice: as rx and as a no_permission drop)",
        (
            Edit(
                DATAPATH,
                "                if addr[0] not in permissions:  # Allocation.permits, inlined\n"
                "                    no_permission += 1  # RFC 8656 11.3: no permission, silently"
                " dropped\n"
                "                    no_permission_bytes += size\n"
                "                    continue\n"
                "                rx_packets += 1\n"
                "                rx_bytes += size\n",
                "                rx_packets += 1\n"
                "                rx_bytes += size\n"
                "                if addr[0] not in permissions:  # Allocation.permits, inlined\n"
                "                    no_permission += 1\n"
                "                    no_permission_bytes += size\n"
                "                    continue\n",
            ),
            Edit(
                DATAPATH,
                "                if addr[0] not in permissions:  # RFC 8656 11.3: no permission,"
                " dropped\n"
                "                    unpermitted += 1\n"
                "                    unpermitted_bytes += size\n"
                "                    continue\n"
                "                received += 1\n"
                "                received_bytes += size\n",
                "                received += 1\n"
                "                received_bytes += size\n"
                "                if addr[0] not in permissions:\n"
                "                    unpermitted += 1\n"
                "                    unpermitted_bytes += size\n"
                "                    continue\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "unpermitted-peer-drop-uncounted",
        "datagrams from peers without a permission dropped without a trace (RFC 8656's "
        '"silently dropped" read as "not counted"): no no_permission drop',
        (
            Edit(
                DATAPATH,
                "                    no_permission += 1  # RFC 8656 11.3: no permission, silently"
                " dropped\n"
                "                    no_permission_bytes += size\n",
                "",
            ),
            Edit(
                DATAPATH,
                "                    unpermitted += 1\n"
                "                    unpermitted_bytes += size\n",
                "",
            ),
            Edit(
                DATAPATH,
                "                drop(stats, NO_PERMISSION, size)"
                "  # RFC 8656 11.3: no permission\n",
                "                pass  # dropped without a trace\n",
            ),
        ),
        ("test_refusals",),
    ),
    Fault(
        "expiry-keeps-gauges",
        "the sweeper closes an expired allocation's relay socket but leaves it in the table "
        "(the gauges, counted from the table, stay up)",
        (
            Edit(
                SERVER,
                "            if alloc.expires_at <= now:\n"
                "                self.delete_allocation(alloc, DeleteReason.EXPIRED)\n",
                "            if alloc.expires_at <= now:\n"
                "                alloc.close()  # the relay socket goes, the table entry stays\n",
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
        "a TCP/TLS connection that closes without Refresh(0) leaves its allocation in the table",
        (
            Edit(
                SERVER,
                "        alloc = self.allocations.get(key)\n"
                "        if alloc is not None:\n"
                "            self.delete_allocation(alloc, DeleteReason.CONNECTION_CLOSED)\n",
                "        alloc = self.allocations.get(key)\n"
                "        if alloc is not None:\n"
                "            alloc.close()  # the relay socket goes, the table entry stays\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "reset-keeps-connection-gauge",
        "only an orderly close takes a TCP/TLS connection out of the listener's open "
        "connections (a reset leaves it on the gauge)",
        (
            Edit(
                LISTENER,
                "        self.connections.remove(self)\n",
                "        if exc is None:\n            self.connections.remove(self)\n",
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
        "a reload that restarts a listener starts the new one without stopping the old: its "
        "sockets, connections and allocations live on (a same-port restart cannot bind)",
        (
            Edit(
                DAEMON,
                "            if running is not None:\n"
                "                await running.stop(DeleteReason.LISTENER_REMOVED)\n"
                "                del self.listeners[new_l.name]\n",
                "            if running is not None:\n"
                "                del self.listeners[new_l.name]\n",
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
        "an answer the amplification guard withheld is counted as tx (besides its "
        "amplification drop)",
        (
            Edit(
                SERVER,
                "            drop(self.stats, Drop.AMPLIFICATION, len(request.raw))  # over a"
                " budget: not sent\n",
                "            drop(self.stats, Drop.AMPLIFICATION, len(request.raw))\n"
                "            self.stats.tx_packets += 1\n"
                "            self.stats.tx_bytes += len(data)\n",
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
        "a datagram sendmmsg or a segmented (GSO) sendmsg refused counted as relayed (batched"
        " path)",
        (
            Edit(
                BATCHIO,
                "                unsent.append(first)  # this one was refused: skip it, send the"
                " rest\n",
                "                pass  # counted although refused\n",
            ),
            Edit(
                BATCHIO,
                "            if sendmsg(fd, pointer, _DONTWAIT) >= 0:\n",
                "            if sendmsg(fd, pointer, _DONTWAIT) >= 0 or True:  # counted although"
                " refused\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "refused-send-counted-indication",
        "a Send indication's payload the kernel refused counted as relayed",
        (
            Edit(
                DATAPATH,
                "        except OSError:\n"
                "            reason, size = SEND_ERROR, len(payload)  # the kernel refused it: not"
                " relayed\n"
                "        else:\n"
                "            stats.cluster_tx_packets += 1\n"
                "            stats.cluster_tx_bytes += len(payload)\n"
                "            return\n",
                "        except OSError:\n"
                "            pass  # the kernel refused it\n"
                "        stats.cluster_tx_packets += 1  # counted as if it had left\n"
                "        stats.cluster_tx_bytes += len(payload)\n"
                "        return\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "refused-send-counted-stream",
        "a TCP/TLS client's ChannelData the kernel refused counted as relayed",
        (
            Edit(
                DATAPATH,
                "                except OSError:\n"
                "                    drop(stats, SEND_ERROR, length)  # the kernel refused it: its"
                " payload bytes\n"
                "                    return size\n",
                "                except OSError:\n"
                "                    pass  # the kernel refused it: counted as if it had left\n",
            ),
            Edit(
                DATAPATH,
                "                relay.sendto(data[start : start + length], peer)\n"
                "            except OSError:\n"
                "                return 0, 0\n",
                "                relay.sendto(data[start : start + length], peer)\n"
                "            except OSError:\n"
                "                pass  # the kernel refused it: counted as if it had left\n",
            ),
        ),
        ("test_shapes",),
    ),
    Fault(
        "udp-gauge-counts-nothing",
        "the listener connection gauge counts open TCP/TLS connections only, not UDP clients",
        (
            Edit(
                TELEMETRY,
                "        connections=stream_connections + udp_clients,\n",
                "        connections=stream_connections,\n",
            ),
        ),
        ("test_traffic", "test_waves"),
    ),
    Fault(
        "delete-keeps-cluster-gauge",
        "the cluster connection gauge reads the allocation total, so a deleted allocation's "
        "relay connection stays on it",
        (
            Edit(
                TELEMETRY,
                "        cluster_connections=active,\n",
                "        cluster_connections=stats.cluster_connections_total,\n",
            ),
        ),
        ("test_traffic",),
    ),
    Fault(
        "stream-tx-bytes-unpadded",
        "frames to TCP/TLS clients counted without their padding, and Data indications as "
        "header + payload, without attributes",
        (
            # StreamEgress: the frame of a one-datagram wake-up, a run's frames, an indication.
            Edit(
                DATAPATH,
                "                    stats.tx_bytes += framed\n",
                "                    stats.tx_bytes += 4 + size\n",
            ),
            Edit(
                DATAPATH,
                "                    run_bytes += framed\n",
                "                    run_bytes += 4 + size\n",
            ),
            Edit(
                DATAPATH,
                "                if write(indication, limit):\n"
                "                    written += 1\n"
                "                    written_bytes += len(indication)\n",
                "                if write(indication, limit):\n"
                "                    written += 1\n"
                "                    written_bytes += 4 + size\n",
            ),
            Edit(
                DATAPATH,
                "                if self.client.send(frame):\n"
                "                    tx_packets += 1\n"
                "                    tx_bytes += len(frame)\n",
                "                if self.client.send(frame):\n"
                "                    tx_packets += 1\n"
                "                    tx_bytes += 4 + size\n",
            ),
        ),
        ("test_traffic", "test_shapes"),
    ),
)

BY_ID = {f.id: f for f in FAULTS}
assert len(BY_ID) == len(FAULTS), "fault ids must be unique"
