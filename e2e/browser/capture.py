"""tcpdump as a second, independent truth: what crossed a link, packet by packet.

Two captures run during the browser scenario: on the host end of the namespace's veth (every
packet the browser sent off its loopback, and every answer) and on `lo`, filtered to the
scenario's own 198.18.N.1, where stunnerd's relay sockets talk to each other. The pcap files
are read here with a few lines of struct, not a dependency; only headers are captured.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e import proc

SNAPLEN = 128  # link + IPv4 + UDP/TCP headers and a STUN header; lengths come from headers
STUN_COOKIE = bytes.fromhex("2112a442")


def tcpdump_binary() -> str | None:
    return shutil.which("tcpdump")


@dataclass(frozen=True)
class Packet:
    """One captured frame, reduced to what the checks need. `proto`: udp, tcp, arp, other."""

    at: float
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    payload: int  # UDP payload bytes (UDP only; 0 otherwise)
    multicast: bool
    head: bytes = b""  # the first bytes of a UDP payload (a STUN header fits)

    def stun_request(self) -> tuple[int, bytes] | None:
        """(method, transaction id) if this is a STUN request (class 0b00); else None."""
        if len(self.head) < 20 or self.head[0] & 0xC0 or self.head[4:8] != STUN_COOKIE:
            return None
        kind = int.from_bytes(self.head[0:2], "big")
        if kind & 0x0110:  # class bits: indication, success or error
            return None
        return kind & 0x3EEF, self.head[8:20]

    def describe(self) -> str:
        return f"{self.proto} {self.src}:{self.sport} > {self.dst}:{self.dport} ({self.payload} B)"


@contextlib.contextmanager
def capturing(interface: str, bpf: str, path: Path, *, logdir: Path) -> Iterator[Path]:
    """tcpdump on `interface` into `path` while the block runs; stopped by pid on exit."""
    binary = tcpdump_binary()
    if binary is None:
        raise RuntimeError("tcpdump not found (apt-get install tcpdump)")
    log_path = logdir / f"tcpdump-{interface}.log"
    # --immediate-mode: each packet reaches the file at once, not when a ring block fills.
    argv = [binary, "-i", interface, "-n", "--immediate-mode", "-U", "-s", str(SNAPLEN)]
    argv += ["-w", str(path), bpf]
    with open(log_path, "wb") as logf:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=logf)
    try:
        deadline = time.monotonic() + 10
        while b"listening on" not in log_path.read_bytes():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"tcpdump on {interface} did not start: {proc.log_tail(log_path)}"
                )
            time.sleep(0.05)
        yield path
    finally:
        proc.stop(child, signal.SIGINT, timeout=5)  # SIGINT: flush and exit


def settled(path: Path, *, quiet: float = 0.2, timeout: float = 5.0) -> list[Packet]:
    """The capture once tcpdump has written nothing new for `quiet` s (the traffic is over)."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        now = path.stat().st_size
        if now == size:
            break
        size = now
        time.sleep(quiet)
    return read_pcap(path)


def read_pcap(path: Path) -> list[Packet]:
    """Frames of a pcap file (Ethernet or Linux cooked v1/v2 link types)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    packets = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off : off + 16])
        if off + 16 + incl > len(data):
            break  # a record tcpdump is still writing
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        at = sec + frac / (1e9 if nano else 1e6)
        packets.append(_decode(at, linktype, frame))
    return packets


def _decode(at: float, linktype: int, frame: bytes) -> Packet:
    if linktype == 1:  # Ethernet
        ethertype, l3, multicast = (
            struct.unpack("!H", frame[12:14])[0],
            frame[14:],
            bool(frame[0] & 1),
        )
    elif linktype == 113:  # Linux cooked v1
        ethertype, l3 = struct.unpack("!H", frame[14:16])[0], frame[16:]
        multicast = struct.unpack("!H", frame[0:2])[0] in (1, 2)  # broadcast / multicast
    elif linktype == 276:  # Linux cooked v2
        ethertype, l3 = struct.unpack("!H", frame[0:2])[0], frame[20:]
        multicast = frame[10] in (1, 2)
    elif linktype == 0:  # BSD loopback (lo on some systems)
        ethertype, l3, multicast = 0x0800, frame[4:], False
    else:
        return Packet(at, "other", "", "", 0, 0, 0, False)
    if ethertype == 0x0806:
        return Packet(at, "arp", "", "", 0, 0, 0, multicast)
    if ethertype != 0x0800 or len(l3) < 20:
        return Packet(at, "other", "", "", 0, 0, 0, multicast)
    ihl = (l3[0] & 0x0F) * 4
    proto_num = l3[9]
    src = ".".join(str(b) for b in l3[12:16])
    dst = ".".join(str(b) for b in l3[16:20])
    multicast = multicast or 224 <= l3[16] <= 239 or dst == "255.255.255.255"
    l4 = l3[ihl:]
    if proto_num == 17 and len(l4) >= 8:
        sport, dport, length = struct.unpack("!HHH", l4[:6])
        return Packet(at, "udp", src, dst, sport, dport, length - 8, multicast, l4[8:28])
    if proto_num == 6 and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        return Packet(at, "tcp", src, dst, sport, dport, 0, multicast)
    return Packet(at, "other", src, dst, 0, 0, 0, multicast)


@dataclass(frozen=True)
class Flow:
    """Datagrams and UDP payload bytes matching one filter over a time window."""

    packets: int
    bytes: int


def udp_flow(
    packets: list[Packet],
    *,
    src: tuple[str, int | None] | None = None,
    dst: tuple[str, int | None] | None = None,
    start: float = 0.0,
    end: float = float("inf"),
) -> Flow:
    """UDP datagrams from `src` to `dst` (a port of None: any port) within [start, end]."""

    def match(ep: tuple[str, int | None] | None, host: str, port: int) -> bool:
        return ep is None or (ep[0] == host and (ep[1] is None or ep[1] == port))

    chosen = [
        p
        for p in packets
        if p.proto == "udp"
        and start <= p.at <= end
        and match(src, p.src, p.sport)
        and match(dst, p.dst, p.dport)
    ]
    return Flow(len(chosen), sum(p.payload for p in chosen))
