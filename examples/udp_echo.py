"""A UDP echo peer for the README's quick tour, and a one-shot client to talk to it.

    python3 examples/udp_echo.py 127.0.0.1:9000                # echo every datagram back
    python3 examples/udp_echo.py --send hello 127.0.0.1:5000   # send, print the answer

The client retries once a second (the listener may still be starting) and gives up after 20 s.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

TRIES = 20
WAIT = 1.0  # seconds per try


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def serve(where: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(where)
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)


def send(where: tuple[str, int], message: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(where)
        sock.settimeout(WAIT)
        for _ in range(TRIES):
            try:
                sock.send(message.encode())
                sys.stdout.write(sock.recv(65535).decode(errors="replace") + "\n")
                return 0
            except TimeoutError:
                continue  # the answer is not back yet: ask again
            except ConnectionRefusedError:
                time.sleep(WAIT)  # nothing listens there yet
    sys.stderr.write(f"udp_echo: no answer from {where[0]}:{where[1]}\n")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description="UDP echo peer, or a one-shot client")
    parser.add_argument("address", type=address, help="HOST:PORT to serve on, or to send to")
    parser.add_argument("--send", metavar="TEXT", help="send TEXT and print the answer")
    args = parser.parse_args()
    if args.send is not None:
        return send(args.address, args.send)
    serve(args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
