"""The two kinds of TURN client transport, as types: one ``send`` contract for both.

A client is what the server answers and what an allocation relays back to. ``send`` returns
whether the frame was accepted: a datagram client's frame has left (the kernel took it), a
stream client's frame is in the connection's bounded write buffer. Only an accepted frame is
counted as ``tx``, by the caller (stunner.turn.datapath); a refused one is a drop, for the
reason in the client's ``refusal``.

A stream client's write buffer is bounded (``limits.stream_write_buffer``): a relayed frame
that does not fit is refused, never queued, so a client that stops reading costs at most the
bound (plus the kernel's socket buffers) and ``tx`` never claims frames it will not read.
STUN answers (``answer``) may use ``ANSWER_HEADROOM`` bytes beyond the bound, so that a slow
client's Refresh still gets through; a client that does not even read those is not reading at
all, and its connection is aborted.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from ..batchio import DatagramBatch
from ..constants import DEFAULT_STREAM_WRITE_BUFFER
from ..stats import Drop
from ..stun import Address

if TYPE_CHECKING:
    from .datapath import ClientOutbox

RunSender = Callable[[list[int], list[int]], tuple[int, int]]
"""Sends a run of frames that sit in a batch (starts, lengths), empties both lists, and returns
(frames, bytes) accepted."""

STREAM_PADS = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
"""A stream frame's padding to 4 bytes (RFC 8656 12.5), by its length % 4."""

ANSWER_HEADROOM = 64 * 1024
"""Bytes of STUN answers a stream connection may queue beyond its bound; past that it is
aborted (a client that sends requests and never reads the answers)."""


class DatagramClient:
    """A UDP client: the listener socket and the client's address are its 5-tuple.

    Its source address can be forged, so unauthenticated answers to it are bounded
    (``source_verified`` is False: the amplification guard applies).

    ``outbox``: where the listener gathers relayed frames to send once per loop turn
    (stunner.turn.datapath.ClientOutbox); None sends each at once.
    """

    __slots__ = ("addr", "key", "outbox", "sock")

    source_verified = False
    refusal = Drop.SEND_ERROR  # why a frame that ``send`` refused was dropped

    def __init__(
        self, sock: socket.socket, addr: Address, outbox: ClientOutbox | None = None
    ) -> None:
        self.sock = sock
        self.addr = addr
        self.key: Hashable = addr  # the allocation table key
        self.outbox = outbox

    @property
    def closed(self) -> bool:
        return False  # a UDP "connection" only ends with its allocation

    def send(self, data: bytes) -> bool:
        """One datagram; False when the kernel refused it (full buffer, unreachable). What
        waits in the outbox leaves first: nothing overtakes a relayed frame."""
        if self.outbox is not None:
            self.outbox.flush()
        try:
            self.sock.sendto(data, self.addr)
        except OSError:
            return False
        return True

    answer = send  # a STUN answer is one datagram like any other

    def run_sender(self, batch: DatagramBatch) -> RunSender:
        """ChannelData frames written in place in ``batch``, sent with one sendmmsg."""
        return functools.partial(batch.send, self.sock, self.addr)

    def __repr__(self) -> str:
        return f"udp-client({self.addr[0]}:{self.addr[1]})"


class StreamClient:
    """A TCP or TLS client connection; the object itself is its allocation table key.

    Its address was proven by the handshake (``source_verified``), so answers go out at once.
    ``limit`` bounds the bytes waiting in stunnerd for the client (the transport's write
    buffer: for TLS, the encrypted records); see the module docstring.
    """

    __slots__ = ("addr", "limit", "on_stalled", "transport", "write_frames_within", "write_within")

    source_verified = True
    refusal = Drop.WRITE_BUFFER_FULL

    def __init__(
        self,
        transport: asyncio.Transport,
        addr: Address,
        limit: int = DEFAULT_STREAM_WRITE_BUFFER,
        on_stalled: Callable[[], None] | None = None,
    ) -> None:
        self.transport = transport
        self.addr = addr
        self.limit = limit
        self.on_stalled = on_stalled  # told when an answer aborts the connection (a log line)
        # The bound check and the write in one call: the TLS transport's own (stunner.tls), whose
        # separate checks would each be a Python call, else the plain transport's C methods.
        self.write_within: Callable[[bytes, int], bool] = (
            getattr(transport, "write_within", None) or self._write_within
        )
        # The same for a run of whole frames: the TLS transport makes each a record of its own
        # (stunner.tls); to a plain transport it is the same write.
        self.write_frames_within: Callable[[bytes, int], bool] = (
            getattr(transport, "write_frames_within", None) or self.write_within
        )

    @property
    def key(self) -> Hashable:
        return self

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def send(self, data: bytes) -> bool:
        """Queue one relayed frame if the write buffer stays within ``limit``, else refuse it
        (the caller counts it as a write_buffer_full drop). Accepted means buffered for the
        client, not read by it."""
        return self.write_within(data, self.limit)

    def _write_within(self, data: bytes, limit: int) -> bool:
        """Write ``data`` if the write buffer stays within ``limit`` on an open connection."""
        # Stream hot path (a wake-up's frames to the client): C calls on the transport only.
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() + len(data) > limit:
            return False
        transport.write(data)
        return True

    def release(self) -> None:
        """The connection is gone: drop the links that lead back to it (the protocol's
        ``on_stalled``, and ``write_within`` and ``write_frames_within``, bound methods of this
        object or of the TLS layer), so that its objects are freed by their reference counts,
        not left in cycles for the collector (stunner.gcpolicy freezes long-lived objects,
        which relies on it). Frames offered afterwards are refused."""
        self.on_stalled = None
        self.write_within = self.write_frames_within = _refuse

    def fits(self, size: int, limit: int) -> bool:
        """Whether ``size`` more bytes keep the write buffer within ``limit``, on an open
        connection."""
        transport = self.transport
        return not transport.is_closing() and transport.get_write_buffer_size() + size <= limit

    def answer(self, data: bytes) -> bool:
        """Queue one STUN answer, within ``limit + ANSWER_HEADROOM``. A client that lets that
        fill never reads: its connection is aborted (buffer discarded, RST) and False returned."""
        if self.transport.is_closing():
            return False
        if not self.fits(len(data), self.limit + ANSWER_HEADROOM):
            self.transport.abort()
            if self.on_stalled is not None:
                self.on_stalled()
            return False
        self.transport.write(data)
        return True

    def __repr__(self) -> str:
        return f"stream-client({self.addr[0]}:{self.addr[1]})"


def _refuse(data: bytes, limit: int) -> bool:
    """``StreamClient.write_within`` of a released client: nothing is written."""
    return False


Client = DatagramClient | StreamClient
