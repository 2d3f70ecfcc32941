"""The browser scenario's own instruments (e2e/browser): the pcap reader that its exact checks
rest on, the retransmission count behind the issue-13 check, and the browser's trust flags.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from e2e.browser.capture import read_pcap, udp_flow
from e2e.browser.chromium import flags, spki_hash
from e2e.browser.session import TurnServer
from e2e.browser.truth import signaling_requests
from e2e.certs import self_signed

COOKIE = bytes.fromhex("2112a442")
BROWSER, GATEWAY = ("198.18.7.2", 40000), ("198.18.7.1", 3478)


def _ip(addr: str) -> bytes:
    return bytes(int(part) for part in addr.split("."))


def _udp_frame(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    mac_dst = b"\x01\x00\x5e\x00\x00\xfb" if dst[0].startswith("224.") else b"\x02" * 6
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0)
    ip += _ip(src[0]) + _ip(dst[0])
    return mac_dst + b"\x04" * 6 + b"\x08\x00" + ip + udp


def _stun(kind: int, txid: bytes, body: bytes = b"") -> bytes:
    return struct.pack("!HH", kind, len(body)) + COOKIE + txid + body


def _pcap(path: Path, frames: list[bytes], *, truncate_last: bool = False) -> None:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        out += struct.pack("<IIII", 1000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(out[:-3] if truncate_last else out)


def test_pcap_reader_counts_udp_payloads_and_stun_retransmissions(tmp_path: Path) -> None:
    first, second = b"A" * 12, b"B" * 12
    frames = [
        _udp_frame(BROWSER, GATEWAY, _stun(0x0001, first)),  # Binding request
        _udp_frame(BROWSER, GATEWAY, _stun(0x0003, second)),  # Allocate request
        _udp_frame(BROWSER, GATEWAY, _stun(0x0003, second)),  # ... retransmitted
        _udp_frame(GATEWAY, BROWSER, _stun(0x0113, second, b"\x00" * 8)),  # 401 answer
        _udp_frame(BROWSER, GATEWAY, _stun(0x0016, b"C" * 12, b"\x00" * 4)),  # Send indication
        _udp_frame(BROWSER, GATEWAY, b"\x40\x00\x00\x04data"),  # ChannelData
        _udp_frame(BROWSER, ("224.0.0.251", 5353), b"mdns"),
        _udp_frame(BROWSER, GATEWAY, b"half-written"),
    ]
    path = tmp_path / "t.pcap"
    _pcap(path, frames, truncate_last=True)
    packets = read_pcap(path)
    assert len(packets) == 7  # the record tcpdump is still writing is left out
    assert udp_flow(packets, src=BROWSER, dst=GATEWAY).packets == 5
    assert udp_flow(packets, src=BROWSER, dst=GATEWAY).bytes == 20 + 20 + 20 + 24 + 8
    assert udp_flow(packets, src=GATEWAY).bytes == 28
    assert udp_flow(packets, dst=(GATEWAY[0], None)).packets == 5
    assert [p.multicast for p in packets] == [False] * 6 + [True]
    server = TurnServer("l", "UDP", GATEWAY[0], GATEWAY[1], "turn:x", "u", "p")
    # Binding and Allocate, once each; the Allocate retransmitted once; indications,
    # answers and ChannelData are not requests.
    assert signaling_requests(packets, server) == (2, 1)


def test_spki_hash_is_what_chromium_documents(tmp_path: Path) -> None:
    """base64(sha256(DER SubjectPublicKeyInfo)), as computed with openssl in Chromium's docs."""
    cert = self_signed("127.0.0.1")
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.cert_pem)
    pipeline = (
        f"openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der"
        " | openssl dgst -sha256 -binary | base64"
    )
    expected = subprocess.run(
        pipeline, shell=True, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert spki_hash(cert.cert_pem) == expected


def test_browser_flags_trust_one_key_and_keep_mdns_off(tmp_path: Path) -> None:
    argv = flags(tmp_path, trust_spki=["abc="], resolvable=["198.18.7.1"])
    assert "--ignore-certificate-errors-spki-list=abc=" in argv
    assert "--ignore-certificate-errors" not in argv  # verification stays on for other keys
    features = next(a for a in argv if a.startswith("--disable-features="))
    assert "WebRtcHideLocalIpsWithMdns" in features.split("=", 1)[1].split(",")
    assert "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 198.18.7.1" in argv
    assert f"--user-data-dir={tmp_path}" in argv
