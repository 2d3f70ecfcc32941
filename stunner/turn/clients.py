"""The two kinds of TURN client transport, as types: one ``send`` contract for both.

A client is what the server answers and what an allocation relays back to. ``send`` returns
whether the frame was accepted: a datagram client's frame has left (the kernel took it), a
stream client's frame is in the connection's write buffer. Only an accepted frame is counted
as ``tx``, by the caller (stunner.turn.datapath).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Hashable

from ..batchio import DatagramBatch
from ..stats import Drop
from ..stun import Address

RunSender = Callable[[list[int], list[int]], tuple[int, int]]
"""Sends a run of frames that sit in a batch (starts, lengths), empties both lists, and returns
(frames, bytes) accepted."""

_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class DatagramClient:
    """A UDP client: the listener socket and the client's address are its 5-tuple.

    Its source address can be forged, so unauthenticated answers to it are bounded
    (``source_verified`` is False: the amplification guard applies).
    """

    __slots__ = ("addr", "key", "sock")

    source_verified = False
    refusal = Drop.SEND_ERROR  # why a frame it does not take is dropped

    def __init__(self, sock: socket.socket, addr: Address) -> None:
        self.sock = sock
        self.addr = addr
        self.key: Hashable = addr  # the allocation table key

    @property
    def closed(self) -> bool:
        return False  # a UDP "connection" only ends with its allocation

    def send(self, data: bytes) -> bool:
        """One datagram; False when the kernel refused it (full buffer, unreachable)."""
        try:
            self.sock.sendto(data, self.addr)
        except OSError:
            return False
        return True

    def run_sender(self, batch: DatagramBatch) -> RunSender:
        """ChannelData frames written in place in ``batch``, sent with one sendmmsg."""
        return functools.partial(batch.send, self.sock, self.addr)

    def __repr__(self) -> str:
        return f"udp-client({self.addr[0]}:{self.addr[1]})"


class StreamClient:
    """A TCP or TLS client connection; the object itself is its allocation table key.

    Its address was proven by the handshake (``source_verified``), so answers go out at once.
    """

    __slots__ = ("addr", "transport")

    source_verified = True
    refusal = Drop.WRITE_BUFFER_FULL  # its send refuses only when the write buffer is full

    def __init__(self, transport: asyncio.Transport, addr: Address) -> None:
        self.transport = transport
        self.addr = addr

    @property
    def key(self) -> Hashable:
        return self

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def send(self, data: bytes) -> bool:
        """Queue one frame on the connection. Accepted means buffered for the client, not read
        by it; the transport buffers without a bound, so today every frame is accepted."""
        self.transport.write(data)
        return True

    def run_sender(self, batch: DatagramBatch) -> RunSender:
        """ChannelData frames written in place in ``batch``, padded to 4 bytes as streams need
        (RFC 8656 12.5), and written as one piece."""
        view = batch.view

        def send_run(starts: list[int], lengths: list[int]) -> tuple[int, int]:
            if not starts:
                return 0, 0
            pieces: list[bytes | memoryview] = []
            for start, length in zip(starts, lengths, strict=True):
                pieces.append(view[start : start + length])
                pieces.append(_PADS[length & 3])
            count = len(starts)
            starts.clear()
            lengths.clear()
            data = b"".join(pieces)
            if not self.send(data):
                return 0, 0
            return count, len(data)

        return send_run

    def __repr__(self) -> str:
        return f"stream-client({self.addr[0]}:{self.addr[1]})"


Client = DatagramClient | StreamClient
