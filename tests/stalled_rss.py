"""stunnerd's RSS with a TCP client that never reads: before and after, for any source tree.

    python -m tests.stalled_rss --tree DIR --mode relay|binding [--megabytes 20]

Runs ``stunnerd`` from ``DIR`` (a checkout of any commit) as a subprocess with one TCP
listener on 127.0.0.1. ``relay``: a TURN-TCP client with a 4 KiB receive buffer allocates,
binds a channel to a UDP peer and never reads while the peer sends that many MB in 1000-byte
datagrams. ``binding``: a client sends that many MB of Binding requests without credentials
and never reads. Prints one JSON line: RSS before and after, listener tx, and whether the
connection was closed. Not a test: a measurement for docs and issue reports.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from stunner.stun import Class, Message, Method
from testkit.ports import free_port
from testkit.wait import wait_until
from tests.streamturn import StreamTurn


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scrape_tx(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith('stunner_listener_packets_total{direction="tx"'):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True, help="source tree whose stunnerd runs")
    parser.add_argument("--mode", choices=("relay", "binding"), required=True)
    parser.add_argument("--megabytes", type=int, default=20)
    args = parser.parse_args()
    port, health, metrics = free_port(), free_port(), free_port()
    config = {
        "version": "v1alpha1",
        "admin": {
            "metrics_endpoint": f"http://127.0.0.1:{metrics}/metrics",
            "healthcheck_endpoint": f"http://127.0.0.1:{health}",
        },
        "auth": {"credentials": {"username": "user1", "password": "pass1"}},
        "listeners": [
            {
                "name": "tcp",
                "protocol": "TCP",
                "address": "127.0.0.1",
                "port": port,
                "routes": ["backend"],
            }
        ],
        "clusters": [{"name": "backend", "endpoints": ["127.0.0.1"]}],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stunnerd.conf"
        path.write_text(yaml.safe_dump(config))
        env = dict(os.environ, PYTHONPATH=args.tree)
        proc = subprocess.Popen(
            [sys.executable, "-m", "stunner.cli.stunnerd", "-c", str(path)],
            cwd=args.tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: ready(health), timeout=20)
            before = rss_kib(proc.pid)
            client = StreamTurn.connect(("127.0.0.1", port), rcvbuf=4096)
            closed = False
            total = args.megabytes * 1_000_000
            if args.mode == "relay":
                peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                peer.bind(("127.0.0.1", 0))
                relay = client.allocate()
                client.channel_bind(0x4000, peer.getsockname())
                for i in range(total // 1000):  # bounded: megabytes * 1000 datagrams
                    peer.sendto(b"m" * 1000, relay)
                    if i % 64 == 63:
                        time.sleep(0.001)
                peer.close()
            else:
                burst = Message(Method.BINDING, Class.REQUEST).encode() * 1000
                sent = 0
                while sent < total:
                    try:
                        client.sock.sendall(burst)
                    except OSError:
                        closed = True
                        break
                    sent += len(burst)
            time.sleep(2.0)  # let stunnerd work through what it read
            after = rss_kib(proc.pid)
            tx = scrape_tx(metrics)
            client.close()
            print(
                json.dumps(
                    {
                        "tree": args.tree,
                        "mode": args.mode,
                        "megabytes": args.megabytes,
                        "rss_before_mib": round(before / 1024, 1),
                        "rss_after_mib": round(after / 1024, 1),
                        "listener_tx_packets": tx,
                        "client_closed_by_server": closed,
                    }
                )
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
