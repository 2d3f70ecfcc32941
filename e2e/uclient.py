"""coturn's turnutils_uclient as a second, independent TURN client.

Per emulated client, with `-c` (no RTCP allocation), uclient makes a probe allocation that it
never deletes, then the real allocation: it binds channels (to the peer port and port + 1),
sends `-n` ChannelData messages of `-l` bytes to the peer at `-z` ms intervals, and deletes the
real allocation (Refresh lifetime 0) at the end. Its summary line gives messages and bytes sent
and received, which must equal what the echo backend saw.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

UCLIENT = "turnutils_uclient"
ALLOCATIONS_PER_CLIENT = 2  # the probe allocation + the real one
LEAKED_PER_CLIENT = 1  # the probe allocation is never deleted

_MSGS = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", re.M)
_BYTES = re.compile(r"tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)\s*$", re.M)
_LOST = re.compile(r"Total lost packets (\d+)")


def uclient_binary() -> str | None:
    return shutil.which(UCLIENT)


@dataclass(frozen=True)
class UclientRun:
    """What uclient reported, and how it was asked."""

    clients: int
    messages: int
    size: int
    sent_msgs: int
    recv_msgs: int
    sent_bytes: int
    recv_bytes: int
    lost: int
    argv: tuple[str, ...]
    output: str


def parse_summary(output: str) -> tuple[int, int, int, int, int]:
    """(sent msgs, recv msgs, sent bytes, recv bytes, lost) from the last summary lines."""
    msgs, nbytes, lost = _MSGS.findall(output), _BYTES.findall(output), _LOST.findall(output)
    if not msgs or not nbytes or not lost:
        raise ValueError(f"no uclient summary in output:\n{output[-2000:]}")
    return (
        int(msgs[-1][0]),
        int(msgs[-1][1]),
        int(nbytes[-1][0]),
        int(nbytes[-1][1]),
        int(lost[-1]),
    )


async def run_uclient(
    host: str,
    port: int,
    username: str,
    password: str,
    peer: tuple[str, int],
    *,
    clients: int,
    messages: int,
    size: int,
    interval_ms: int = 5,
    timeout: float = 40.0,
) -> UclientRun:
    """Run uclient over UDP against `host:port`, relaying to the echo `peer`."""
    binary = uclient_binary()
    if binary is None:
        raise FileNotFoundError(UCLIENT)
    argv = (
        binary,
        "-u", username,
        "-w", password,
        "-p", str(port),
        "-e", peer[0],
        "-r", str(peer[1]),
        "-n", str(messages),
        "-l", str(size),
        "-m", str(clients),
        "-z", str(interval_ms),
        "-c",
        host,
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{UCLIENT} exited {proc.returncode}:\n{text[-2000:]}")
    sent, recv, sent_b, recv_b, lost = parse_summary(text)
    return UclientRun(clients, messages, size, sent, recv, sent_b, recv_b, lost, argv, text)
