"""A real stunnerd's stderr under 10,000 wrong passwords from one source: exactly
refusals.BURST lines, none with the password, every request still answered."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from stunner.stun import Class, Message, Method, parse_message
from stunner.turn import refusals
from tests.integration.test_cli import Daemon

WRONG = "wrong-password-123"
REQUESTS = 10_000
BATCH = 100  # sent, then their answers read: the client's receive buffer never overflows


def test_ten_thousand_wrong_passwords_write_five_lines(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, metrics=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        daemon.start()
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        target = ("127.0.0.1", daemon.udp_port)
        first = Message(Method.ALLOCATE, Class.REQUEST, attributes={"REQUESTED-TRANSPORT": 17})
        sock.sendto(first.encode(), target)
        challenge = parse_message(sock.recv(2048))
        realm, nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
        key = hashlib.md5(f"user1:{realm}:{WRONG}".encode()).digest()
        codes: dict[int, int] = {}
        for _ in range(REQUESTS // BATCH):
            for _ in range(BATCH):
                attrs = {"REQUESTED-TRANSPORT": 17, "USERNAME": "user1", "REALM": realm}
                attrs["NONCE"] = nonce
                request = Message(Method.ALLOCATE, Class.REQUEST, attributes=attrs)
                sock.sendto(request.encode(key), target)
            for _ in range(BATCH):
                code = parse_message(sock.recv(2048)).attributes["ERROR-CODE"][0]
                codes[code] = codes.get(code, 0) + 1
        assert codes == {401: REQUESTS}
    finally:
        sock.close()
        daemon.stop()
    log = daemon.log.read_text()
    failures = [line for line in log.splitlines() if "authentication failed" in line]
    assert len(failures) == refusals.BURST == 5, log[-2000:]
    assert all(line.endswith("user 'user1': wrong password") for line in failures)
    assert WRONG not in log
