"""Is a STUN server answering on HOST:PORT (UDP)? Sends Binding requests until one is answered.

Used by the README test inside its network namespace; exits 0 once answered, 1 after 20 s.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
MAGIC_COOKIE = 0x2112A442


def main() -> int:
    host, _, port = sys.argv[1].rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, int(port)))
        sock.settimeout(1.0)
        for _ in range(20):
            transaction = os.urandom(12)
            try:
                sock.send(struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC_COOKIE) + transaction)
                answer = sock.recv(2048)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                time.sleep(1.0)  # not listening yet
                continue
            (kind,) = struct.unpack("!H", answer[:2])
            if kind == BINDING_SUCCESS and answer[8:20] == transaction:
                sys.stdout.write("binding answered\n")
                return 0
    sys.stderr.write(f"no STUN answer from {host}:{port}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
